// unpickle_state_dict on arbitrary bytes taken as a data.pkl: the restricted
// unpickler alone (every opcode it knows, the memo, marks, the globals and
// the argument checks of the tensor rebuild functions).
#include <cstdint>

#include "core/error.h"
#include "formats/pytorch/state_dict_pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto sd = chatvec::unpickle_state_dict(data, size, "fuzz.pkl");
    for (const auto& t : sd.tensors) {
      if (t.storage >= sd.storages.size()) __builtin_trap();
      if (t.stride.size() != t.shape.size() || t.shape.size() > 64) __builtin_trap();
    }
  } catch (const chatvec::InputError&) {
  }
  return 0;
}
