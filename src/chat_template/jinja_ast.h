// Syntax tree of a parsed template (internal to the chat_template library).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "chat_template/jinja.h"
#include "chat_template/jinja_value.h"

namespace chatvec::jinja {

enum class NodeType {
  // Expressions
  Literal,    // literal
  Name,       // name
  List,       // items
  Dict,       // items: key, value, key, value...
  Tuple,      // items
  GetAttr,    // a . name
  GetItem,    // a [ b ]
  Slice,      // a [ items[0] : items[1] : items[2] ] (null = omitted)
  Call,       // a ( items, kwargs )
  Filter,     // a | name ( items, kwargs )   (a null in a filter block)
  Test,       // a is [not] name ( items, kwargs ); negate
  Unary,      // name in {"-", "+"}; a
  Not,        // a
  Binary,     // a name b  (+ - * / // % ** ~)
  Compare,    // items[0] ops[0] items[1] ops[1] items[2]...
  And,        // a b
  Or,         // a b
  CondExpr,   // a if b else c (c may be null)
  // Statements
  Text,       // literal (a string)
  Output,     // {{ a }}
  If,         // items: conditions; branches: bodies; else_body
  For,        // targets in a [if b]: body else else_body
  Set,        // targets = a ; or targets[0].name = a (attr set)
  SetBlock,   // targets[0] = rendered body
  Macro,      // name(params) body
  FilterBlock,// filter node `a` applied to the rendered body
  Scope,      // body rendered as is ({% generation %})
  Break,
  Continue,
};

struct Node {
  NodeType type;
  size_t offset = 0;  // where in the template source the node starts
  std::string name;
  Value literal;
  NodePtr a, b, c;
  std::vector<NodePtr> items;
  std::vector<std::pair<std::string, NodePtr>> kwargs;  // also macro parameters (default may be null)
  std::vector<std::string> ops;
  std::vector<std::string> targets;
  std::vector<std::vector<NodePtr>> branches;
  std::vector<NodePtr> body, else_body;
  bool negate = false;

  Node(NodeType t, size_t off) : type(t), offset(off) {}
};

// Parse (lexer + parser), defined in jinja_parse.cpp.
std::vector<NodePtr> parse_template(const std::string& source, const std::string& name);

// Line and column (1-based) of a byte offset in `source`; columns count code points.
std::pair<int, int> line_column(const std::string& source, size_t offset);

}  // namespace chatvec::jinja
