#include "merge/plan.h"

#include <set>

#include "core/error.h"

namespace chatvec {

bool TensorSelection::selected(const std::string& name) const {
  if (!include.empty()) {
    bool any = false;
    for (const auto& r : include)
      if (std::regex_search(name, r)) any = true;
    if (!any) return false;
  }
  for (const auto& r : exclude)
    if (std::regex_search(name, r)) return false;
  return true;
}

uint64_t TensorTask::numel() const {
  uint64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

uint64_t TensorTask::nbytes() const { return numel() * dtype_bits(dtype) / 8; }

bool is_vocab_tensor(const std::string& name) {
  static const std::set<std::string> names = {"model.embed_tokens.weight", "lm_head.weight",
                                              "transformer.wte.weight", "embed_tokens.weight",
                                              "model.embed_tokens.weights"};
  return names.count(name) > 0;
}

namespace {

std::string describe(const CheckpointTensor& t) {
  return std::string(dtype_name(t.info->dtype)) + " " + shape_string(t.info->shape);
}

void check_same_shape(const std::string& name, const Checkpoint& a, const CheckpointTensor& ta, const Checkpoint& b,
                      const CheckpointTensor& tb) {
  if (ta.info->shape == tb.info->shape) return;
  if (is_vocab_tensor(name) && ta.info->shape.size() == 2 && tb.info->shape.size() == 2 &&
      ta.info->shape[1] == tb.info->shape[1])
    throw InputError("tensor \"" + name + "\": vocabulary sizes differ (" + std::to_string(ta.info->shape[0]) +
                     " rows in " + a.path() + ", " + std::to_string(tb.info->shape[0]) + " in " + b.path() +
                     "); extract and apply need equal vocabularies: use `chatvec merge`, whose --embeddings policies "
                     "handle different vocabularies, or keep the target's rows with --exclude 'embed_tokens|lm_head'");
  throw InputError("tensor \"" + name + "\" has shape " + shape_string(ta.info->shape) + " in " + a.path() +
                   " but " + shape_string(tb.info->shape) + " in " + b.path());
}

const CheckpointTensor& require(const Checkpoint& c, const std::string& name, const std::string& role) {
  const CheckpointTensor* t = c.find(name);
  if (!t) throw InputError("tensor \"" + name + "\" is missing from the " + role + " model " + c.path());
  return *t;
}

void require_computable(const std::string& name, const Checkpoint& c, const CheckpointTensor& t) {
  if (!dtype_is_float_computable(t.info->dtype))
    throw InputError("tensor \"" + name + "\" in " + c.path() + " has dtype " +
                     std::string(dtype_name(t.info->dtype)) +
                     ": arithmetic is supported on F16, BF16, F32 and F64 only (exclude it with --exclude)");
}

// A vocabulary tensor built row by row: operands may have different row
// counts, but the same row width; every row the map names must exist.
void plan_rows_task(TensorTask& task, const Checkpoint& layout, const CheckpointTensor& lt, const Checkpoint* source,
                    const std::vector<VectorInput>& vectors, const std::shared_ptr<const RowMap>& map,
                    const PlanOptions& opt) {
  const std::string& name = task.name;
  if (!source || vectors.size() != 1 || !vectors[0].minus)
    throw InputError("tensor \"" + name + "\": vocabulary policies other than full/skip need merge's three models");
  const VectorInput& v = vectors[0];
  const CheckpointTensor& p = require(*v.plus, name, v.label);
  const CheckpointTensor& m = require(*v.minus, name, "base");
  for (auto [c, t] : {std::pair{&layout, &lt}, std::pair{v.plus, &p}, std::pair{v.minus, &m}}) {
    require_computable(name, *c, *t);
    if (t->info->shape.size() != 2 || t->info->shape[1] != lt.info->shape[1])
      throw InputError("tensor \"" + name + "\" has shape " + shape_string(t->info->shape) + " in " + c->path() +
                       " but " + shape_string(lt.info->shape) + " in " + layout.path() + " (row widths differ)");
  }
  const int64_t rows_s = int64_t(task.source->info->shape[0]), rows_p = int64_t(p.info->shape[0]),
                rows_m = int64_t(m.info->shape[0]);
  for (size_t i = 0; i < map->rows.size(); ++i) {
    const RowOp& r = map->rows[i];
    const bool bad = (r.kind != RowOp::FromPlus && (r.source_row < 0 || r.source_row >= rows_s)) ||
                     (r.kind != RowOp::FromSource && (r.plus_row < 0 || r.plus_row >= rows_p)) ||
                     (r.kind == RowOp::Combine && (r.minus_row < 0 || r.minus_row >= rows_m));
    if (bad) throw std::logic_error("row map of " + name + ": row " + std::to_string(i) + " out of range");
  }
  task.kind = TaskKind::Rows;
  task.row_map = map;
  task.shape = {uint64_t(map->rows.size()), lt.info->shape[1]};
  task.terms.push_back(TensorTerm{v.ratio, &p, &m});
  task.dtype = opt.dtype ? *opt.dtype : lt.info->dtype;
}

}  // namespace

MergePlan build_plan(const Checkpoint& layout, const Checkpoint* source, const std::vector<VectorInput>& vectors,
                     const PlanOptions& opt) {
  MergePlan plan;
  std::set<const SafetensorsFile*> seen;
  auto count_read = [&](const CheckpointTensor* t) {
    if (t) plan.bytes_read += t->info->nbytes();
  };
  size_t vector_missing = 0;

  for (const std::string& name : layout.names()) {
    const CheckpointTensor& lt = layout.at(name);
    const DType ldt = lt.info->dtype;
    TensorTask task;
    task.name = name;
    task.shape = lt.info->shape;
    task.source = source ? &source->at(name) : nullptr;

    const bool is_int = !dtype_is_float(ldt);
    const bool selected = opt.selection.selected(name);
    bool combine = selected && !is_int;
    if (auto k = opt.keep_unchanged.find(name); k != opt.keep_unchanged.end() && combine) {
      combine = false;
      task.note = k->second;
    }

    // Vectors extracted with a selection may not hold every tensor.
    if (combine && opt.allow_partial_vectors) {
      for (const auto& v : vectors)
        if (!v.minus && !v.plus->find(name)) combine = false;
      if (!combine) {
        ++vector_missing;
        task.note = "not in every vector";
      }
    }

    if (!combine) {
      if (!task.source) {
        if (opt.drop_uncombined) continue;
        task.source = &lt;
      }
      task.kind = TaskKind::Copy;
      task.dtype = task.source->info->dtype;
      if (task.note.empty()) task.note = is_int ? "integer/bool tensor" : "outside the selection";
      count_read(task.source);
      ++plan.copied;
      plan.tasks.push_back(std::move(task));
      continue;
    }

    if (auto rm = opt.row_maps.find(name); rm != opt.row_maps.end()) {
      plan_rows_task(task, layout, lt, source, vectors, rm->second, opt);
      for (const auto& term : task.terms) {
        count_read(term.plus);
        count_read(term.minus);
      }
      count_read(task.source);
      ++plan.combined;
      plan.tasks.push_back(std::move(task));
      continue;
    }

    // Combine: every operand must exist with the same shape and a float dtype.
    if (task.source) {
      check_same_shape(name, layout, lt, *source, *task.source);
      require_computable(name, *source, *task.source);
    }
    require_computable(name, layout, lt);
    for (const auto& v : vectors) {
      const CheckpointTensor& p = require(*v.plus, name, v.label);
      check_same_shape(name, layout, lt, *v.plus, p);
      require_computable(name, *v.plus, p);
      const CheckpointTensor* m = nullptr;
      if (v.minus) {
        m = &require(*v.minus, name, v.minus == v.plus ? v.label : (v.label == "chat" ? "base" : v.label + " base"));
        check_same_shape(name, *v.plus, p, *v.minus, *m);
        require_computable(name, *v.minus, *m);
      }
      task.terms.push_back(TensorTerm{v.ratio, &p, m});
      count_read(&p);
      count_read(m);
    }
    count_read(task.source);
    task.kind = TaskKind::Combine;
    task.dtype = opt.dtype ? *opt.dtype : ldt;
    ++plan.combined;
    plan.tasks.push_back(std::move(task));
  }

  // Tensors the other models have but the layout lacks are a mismatch too.
  auto check_extra = [&](const Checkpoint& c, const std::string& role) {
    for (const std::string& name : c.names()) {
      if (layout.find(name)) continue;
      const CheckpointTensor& t = c.at(name);
      if (!opt.selection.selected(name) || !dtype_is_float(t.info->dtype)) continue;
      throw InputError("tensor \"" + name + "\" (" + describe(t) + ") of the " + role + " model " + c.path() +
                       " is missing from " + layout.path());
    }
  };
  if (source) check_extra(*source, "target");
  for (const auto& v : vectors) {
    check_extra(*v.plus, v.label);
    if (v.minus) check_extra(*v.minus, v.label == "chat" ? "base" : v.label + " base");
  }

  for (const auto& t : plan.tasks) plan.bytes_written += t.nbytes();
  if (vector_missing)
    plan.notes.push_back(std::to_string(vector_missing) + " tensors are not in every vector and are copied unchanged");
  return plan;
}

}  // namespace chatvec
