#include "gguf/gguf_names.h"

namespace chatvec::gguf {

int qk_kind(std::string_view gguf_name) {
  const auto w = parse_gguf_weight_name(gguf_name);
  if (!w) return 0;
  if (w->role == WeightRole::Q || w->role == WeightRole::QBias) return 1;
  if (w->role == WeightRole::K || w->role == WeightRole::KBias) return 2;
  return 0;
}

}  // namespace chatvec::gguf
