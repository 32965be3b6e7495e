// Errors raised while parsing or rendering a chat template.
#pragma once

#include <string>

#include "core/error.h"

namespace chatvec {

// The template is malformed, uses a construct we do not support, or failed
// while rendering (a type error, an undefined function...).  An input error
// (exit status 2): the model's template or the conversation is at fault.
// what() reads "chat template <name>: line L, column C: <detail>".
class TemplateError : public InputError {
 public:
  TemplateError(const std::string& template_name, int line, int column, const std::string& detail)
      : InputError("chat template " + template_name + ": line " + std::to_string(line) + ", column " +
                   std::to_string(column) + ": " + detail),
        line_(line),
        column_(column),
        detail_(detail) {}
  int line() const { return line_; }
  int column() const { return column_; }
  const std::string& detail() const { return detail_; }

 private:
  int line_;
  int column_;
  std::string detail_;
};

// The template itself called raise_exception(message), typically because
// the conversation breaks its rules ("Conversation roles must alternate...").
// message() is the template's own text, unchanged.
class TemplateRaisedError : public TemplateError {
 public:
  TemplateRaisedError(const std::string& template_name, int line, int column, const std::string& message)
      : TemplateError(template_name, line, column, "raise_exception: " + message), message_(message) {}
  const std::string& message() const { return message_; }

 private:
  std::string message_;
};

}  // namespace chatvec
