#include "merge/plan.h"

#include "core/error.h"
#include "formats/architecture.h"

namespace chatvec {

bool TensorSelection::selected(const std::string& name) const {
  if (!include.empty()) {
    bool any = false;
    for (size_t i = 0; i < include.size() && !any; ++i)
      if (name_matches(name, include[i], include_src[i], "--include")) any = true;
    if (!any) return false;
  }
  for (size_t i = 0; i < exclude.size(); ++i)
    if (name_matches(name, exclude[i], exclude_src[i], "--exclude")) return false;
  return true;
}

TensorSelection make_selection(const std::vector<std::string>& include, const std::vector<std::string>& exclude) {
  auto compile = [](const std::vector<std::string>& srcs, const char* flag) {
    std::vector<std::regex> r;
    for (const auto& s : srcs) r.push_back(compile_name_pattern(s, flag));
    return r;
  };
  TensorSelection sel;
  sel.include = compile(include, "--include");
  sel.exclude = compile(exclude, "--exclude");
  sel.include_src = include;
  sel.exclude_src = exclude;
  return sel;
}

uint64_t TensorTask::numel() const {
  uint64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

uint64_t TensorTask::nbytes() const { return numel() * dtype_bits(dtype) / 8; }

std::vector<const CheckpointTensor*> TensorTask::inputs() const {
  std::vector<const CheckpointTensor*> in;
  if (target) in.push_back(target);
  for (const auto& t : terms)
    for (const CheckpointTensor* p : {t.chat, t.base, t.vector, t.chat_rows})
      if (p) in.push_back(p);
  return in;
}

std::string chat_rows_tensor_name(const std::string& name) { return "chatvec.chat_rows." + name; }
bool is_vector_side_tensor(const std::string& name) { return name.rfind("chatvec.", 0) == 0; }

namespace {

std::string describe(const CheckpointTensor& t) {
  return std::string(dtype_name(t.dtype())) + " " + shape_string(t.shape());
}

void check_same_shape(const std::string& name, const Checkpoint& a, const CheckpointTensor& ta, const Checkpoint& b,
                      const CheckpointTensor& tb) {
  if (ta.shape() == tb.shape()) return;
  if (is_vocab_tensor(name) && ta.shape().size() == 2 && tb.shape().size() == 2 && ta.shape()[1] == tb.shape()[1])
    throw InputError("tensor \"" + name + "\": vocabulary sizes differ (" + std::to_string(ta.shape()[0]) +
                     " rows in " + a.path() + ", " + std::to_string(tb.shape()[0]) + " in " + b.path() +
                     "); extract and apply need equal vocabularies: use `chatvec merge`, whose --embeddings policies "
                     "handle different vocabularies, or keep the target's rows with --exclude 'embed_tokens|lm_head'");
  throw InputError("tensor \"" + name + "\" has shape " + shape_string(ta.shape()) + " in " + a.path() + " but " +
                   shape_string(tb.shape()) + " in " + b.path());
}

const CheckpointTensor& require(const Checkpoint& c, const std::string& name, const std::string& role) {
  const CheckpointTensor* t = c.find(name);
  if (!t) throw InputError("tensor \"" + name + "\" is missing from the " + role + " model " + c.path());
  return *t;
}

void require_computable(const std::string& name, const Checkpoint& c, const CheckpointTensor& t) {
  if (!t.readable_as_f32())
    throw InputError("tensor \"" + name + "\" in " + c.path() + " has dtype " + std::string(dtype_name(t.dtype())) +
                     ": arithmetic is supported on F16, BF16, F32 and F64 only (exclude it with --exclude)");
}

// The output dtype of a tensor under --dtype auto: its own, except FP8
// block-scaled weights, dequantised and written as BF16.
DType auto_dtype(const CheckpointTensor& t) { return t.fp8_block_scales() ? DType::BF16 : t.dtype(); }

// The role names messages use for a vector's inputs.
std::string chat_role(const VectorSource& v) { return v.label; }
std::string base_role(const VectorSource& v) { return v.label == "chat" ? "base" : v.label + " base"; }

// A vocabulary tensor built row by row: operands may have different row
// counts, but the same row width; every row the map names must exist.
void plan_rows_task(TensorTask& task, const Checkpoint& layout, const CheckpointTensor& lt, const PlanInputs& in,
                    const std::shared_ptr<const RowMap>& map, const PlanOptions& opt,
                    const std::vector<std::unique_ptr<ResolvedSchedule>>& ratios) {
  const std::string& name = task.name;
  const bool vectors = !in.vectors.empty() && in.vectors[0].vector;
  if (in.vectors.empty() || (!vectors && (in.vectors.size() != 1 || !in.vectors[0].chat || !in.vectors[0].base)) ||
      (vectors && !in.target))
    throw std::logic_error("tensor " + name + ": a row map needs chat and base, or a target and vectors");
  auto check_width = [&](const Checkpoint& c, const CheckpointTensor& t) {
    require_computable(name, c, t);
    if (t.shape().size() != 2 || t.shape()[1] != lt.shape()[1])
      throw InputError("tensor \"" + name + "\" has shape " + shape_string(t.shape()) + " in " + c.path() + " but " +
                       shape_string(lt.shape()) + " in " + layout.path() + " (row widths differ)");
  };
  check_width(layout, lt);
  for (size_t vi = 0; vi < in.vectors.size(); ++vi) {
    const VectorSource& v = in.vectors[vi];
    TensorTerm term{ratios[vi]->ratio_for(name)};
    term.index = uint32_t(vi);
    if (vectors) {
      term.vector = &require(*v.vector, name, v.label);
      check_width(*v.vector, *term.vector);
      term.chat_rows = v.vector->find(chat_rows_tensor_name(name));
      if (term.chat_rows) check_width(*v.vector, *term.chat_rows);
      term.base_rows_present = v.base_rows_present;
    } else {
      term.chat = &require(*v.chat, name, chat_role(v));
      term.base = &require(*v.base, name, "base");
      check_width(*v.chat, *term.chat);
      check_width(*v.base, *term.base);
    }
    task.terms.push_back(term);
  }
  const int64_t rows_target = task.target ? int64_t(task.target->rows()) : 0;
  auto rows_of = [](const CheckpointTensor* t) { return t ? int64_t(t->rows()) : int64_t(0); };
  for (size_t i = 0; i < map->rows.size(); ++i) {
    const RowOp& r = map->rows[i];
    bool bad = false;
    if (r.kind == RowOp::KeepTarget || (r.kind == RowOp::Combine && task.target))
      bad |= r.target_row < 0 || r.target_row >= rows_target;
    if (r.kind == RowOp::Combine) {
      for (const TensorTerm& t : task.terms) {
        bad |= r.base_row < 0 || r.base_row >= rows_of(t.vector ? t.vector : t.base);
        if (!t.vector) bad |= r.chat_row < 0 || r.chat_row >= rows_of(t.chat);
      }
    }
    if (r.kind == RowOp::FromChat) {
      if (r.term < 0 || size_t(r.term) >= task.terms.size()) {
        bad = true;
      } else {
        const TensorTerm& t = task.terms[size_t(r.term)];
        bad |= r.chat_row < 0 || r.chat_row >= rows_of(t.vector ? t.chat_rows : t.chat);
      }
    }
    if (bad) throw std::logic_error("row map of " + name + ": row " + std::to_string(i) + " out of range");
  }
  task.kind = TaskKind::Rows;
  task.row_map = map;
  task.shape = {uint64_t(map->rows.size()), lt.shape()[1]};
  task.dtype = opt.dtype ? *opt.dtype : auto_dtype(lt);
}

}  // namespace

MergePlan build_plan(const PlanInputs& in, const PlanOptions& opt) {
  if (!in.target && (in.vectors.size() != 1 || !in.vectors[0].chat || !in.vectors[0].base))
    throw std::logic_error("build_plan: without a target, the plan is chat - base (extract)");
  // The output has the target's tensors; extract's, the chat model's.
  const Checkpoint& layout = in.target ? *in.target : *in.vectors[0].chat;
  MergePlan plan;
  // The ratio schedules, for the layers of the output's layout.
  for (const std::string& name : layout.names()) plan.layers = std::max(plan.layers, layer_of(name) + 1);
  std::vector<std::unique_ptr<ResolvedSchedule>> ratios;
  for (const auto& v : in.vectors)
    ratios.push_back(std::make_unique<ResolvedSchedule>(
        v.ratio, plan.layers, in.vectors.size() == 1 ? std::string("--ratio") : "--ratio of " + v.label));
  if (opt.ops.ties && in.vectors.size() < 2)
    throw InputError("--ties needs at least two vectors (apply with two or more --vector); with one vector it is "
                     "magnitude pruning: use --keep");
  auto count_read = [&](const CheckpointTensor* t) {
    if (t) plan.bytes_read += t->nbytes();
  };
  size_t vector_missing = 0;

  for (const std::string& name : layout.names()) {
    const CheckpointTensor& lt = layout.at(name);
    TensorTask task;
    task.name = name;
    task.shape = lt.shape();
    task.target = in.target ? &lt : nullptr;

    const bool is_int = !dtype_is_float(lt.dtype());
    bool combine = opt.selection.selected(name) && !is_int;
    if (auto k = opt.keep_target.find(name); k != opt.keep_target.end() && combine) {
      combine = false;
      task.note = k->second;
    }

    // Vectors extracted with a selection may not hold every tensor.
    if (combine) {
      for (const auto& v : in.vectors)
        if (v.vector && !v.vector->find(name)) combine = false;
      if (!combine) {
        ++vector_missing;
        task.note = "not in every vector";
      }
    }

    if (!combine) {
      if (!in.target) continue;  // extract: the vector holds combined tensors only
      task.kind = TaskKind::Copy;
      task.dtype = lt.dtype();
      if (task.note.empty()) task.note = is_int ? "integer/bool tensor" : "outside the selection";
      if (lt.fp8_block_scales()) {  // its scales are not written: dequantised, no term added
        task.kind = TaskKind::Combine;
        task.dtype = opt.dtype ? *opt.dtype : auto_dtype(lt);
        task.note += ", FP8 dequantised";
      }
      count_read(task.target);
      ++plan.copied;
      plan.tasks.push_back(std::move(task));
      continue;
    }

    if (auto rm = opt.row_maps.find(name); rm != opt.row_maps.end()) {
      plan_rows_task(task, layout, lt, in, rm->second, opt, ratios);
      if (task.target) task.ops = opt.ops;  // on the rows each vector is added to (vector_ops.h)
      task.ratio_reason = ratios[0]->reason_for(name);
      for (const CheckpointTensor* t : task.inputs()) count_read(t);
      ++plan.combined;
      plan.tasks.push_back(std::move(task));
      continue;
    }

    // Combine: every operand must exist with the same shape and a float dtype.
    require_computable(name, layout, lt);
    for (size_t vi = 0; vi < in.vectors.size(); ++vi) {
      const VectorSource& v = in.vectors[vi];
      TensorTerm term{ratios[vi]->ratio_for(name)};
      term.index = uint32_t(vi);
      if (v.vector) {
        term.vector = &require(*v.vector, name, v.label);
        check_same_shape(name, layout, lt, *v.vector, *term.vector);
        require_computable(name, *v.vector, *term.vector);
      } else {
        term.chat = &require(*v.chat, name, chat_role(v));
        check_same_shape(name, layout, lt, *v.chat, *term.chat);
        require_computable(name, *v.chat, *term.chat);
        term.base = &require(*v.base, name, base_role(v));
        check_same_shape(name, *v.chat, *term.chat, *v.base, *term.base);
        require_computable(name, *v.base, *term.base);
      }
      task.terms.push_back(term);
    }
    for (const CheckpointTensor* t : task.inputs()) count_read(t);
    task.kind = TaskKind::Combine;
    task.dtype = opt.dtype ? *opt.dtype : auto_dtype(lt);
    task.ops = opt.ops;
    task.ratio_reason = ratios[0]->reason_for(name);
    ++plan.combined;
    plan.tasks.push_back(std::move(task));
  }

  // Tensors the other models have but the output's layout lacks are a
  // mismatch too.
  auto check_extra = [&](const Checkpoint& c, const std::string& role) {
    for (const std::string& name : c.names()) {
      if (layout.find(name) || is_vector_side_tensor(name)) continue;
      const CheckpointTensor& t = c.at(name);
      if (!opt.selection.selected(name) || !dtype_is_float(t.dtype())) continue;
      throw InputError("tensor \"" + name + "\" (" + describe(t) + ") of the " + role + " model " + c.path() +
                       " is missing from " + layout.path());
    }
  };
  for (const auto& v : in.vectors) {
    if (v.vector) {
      check_extra(*v.vector, v.label);
    } else {
      check_extra(*v.chat, chat_role(v));
      check_extra(*v.base, base_role(v));
    }
  }

  // Extract: the chat model's rows of the tokens it added, after the vector.
  for (const auto& extra : opt.chat_rows_tensors) {
    const VectorSource& v = in.vectors.at(0);
    if (in.target || !v.chat) throw std::logic_error("chat rows tensors are written by extract only");
    const CheckpointTensor& from = require(*v.chat, extra.from, chat_role(v));
    TensorTask task;
    task.name = extra.name;
    task.kind = TaskKind::Rows;
    task.row_map = extra.rows;
    task.shape = {uint64_t(extra.rows->rows.size()), from.shape().at(1)};
    task.dtype = opt.dtype ? *opt.dtype : auto_dtype(from);
    task.terms.push_back(TensorTerm{1.0, &from, nullptr, nullptr});
    for (const RowOp& r : extra.rows->rows)
      if (r.kind != RowOp::FromChat || r.chat_row < 0 || r.chat_row >= int64_t(from.rows()))
        throw std::logic_error("chat rows of " + extra.from + ": bad row");
    count_read(&from);
    ++plan.combined;
    plan.tasks.push_back(std::move(task));
  }

  for (const auto& t : plan.tasks) plan.bytes_written += t.nbytes();
  for (size_t vi = 0; vi < ratios.size(); ++vi)
    for (const std::string& pattern : ratios[vi]->unmatched())
      plan.warnings.push_back("--ratio-for \"" + pattern + "\" matches no tensor" +
                              (ratios.size() > 1 ? " (" + in.vectors[vi].label + ")" : std::string()) +
                              ": it changes nothing");
  if (vector_missing)
    plan.notes.push_back(std::to_string(vector_missing) + " tensors are not in every vector and are copied unchanged");
  return plan;
}

}  // namespace chatvec
