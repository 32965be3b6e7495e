// A Jinja2 subset for Hugging Face chat templates: parse once, render many
// times.  Configured as transformers configures Jinja2 for chat templates:
// trim_blocks and lstrip_blocks on, a single trailing newline of the source
// dropped, the loopcontrols extension ({% break %}, {% continue %}) enabled,
// and the transformers-specific {% generation %} block accepted.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "chat_template/jinja_value.h"
#include "chat_template/template_error.h"

namespace chatvec::jinja {

struct Node;
using NodePtr = std::shared_ptr<Node>;

class Template {
 public:
  // Parses `source`; throws TemplateError naming `name`, the line and the
  // column of the first problem.
  Template(std::string source, std::string name);
  ~Template();
  Template(const Template&) = default;
  Template& operator=(const Template&) = default;
  Template(Template&&) noexcept = default;
  Template& operator=(Template&&) noexcept = default;

  // Renders with `context` (a JSON object: its keys become variables).
  std::string render(const Json& context) const;

  const std::string& name() const { return name_; }
  const std::string& source() const { return source_; }

 private:
  std::string source_;
  std::string name_;
  std::vector<NodePtr> body_;
};

}  // namespace chatvec::jinja
