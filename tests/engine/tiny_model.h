// Small random Llama-family checkpoints written with our SafetensorsWriter,
// for tests that compare the engine with the Python reference.
#pragma once

#include <cstdint>
#include <string>

#include "core/dtype.h"
#include "core/json_util.h"

namespace chatvec::testing {

struct TinyModelSpec {
  Json config;              // complete config.json
  DType dtype = DType::F32; // storage type of every tensor
  uint64_t seed = 1;
};

// Configs covering the features: GQA + explicit head_dim + Llama-3 rope
// scaling + untied head; Qwen2 biases + tied embeddings; Mistral sliding
// window.
Json tiny_llama3_config();
Json tiny_qwen2_config();
Json tiny_mistral_config();

// Write config.json + model.safetensors into `dir` (which must exist).
void write_tiny_model(const std::string& dir, const TinyModelSpec& spec);

}  // namespace chatvec::testing
