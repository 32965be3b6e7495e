// Lexer and parser of the Jinja subset.

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <set>

#include "chat_template/jinja_ast.h"

namespace chatvec::jinja {

std::pair<int, int> line_column(const std::string& source, size_t offset) {
  int line = 1;
  size_t line_start = 0;
  offset = std::min(offset, source.size());
  for (size_t k = 0; k < offset; ++k) {
    if (source[k] == '\n') {
      ++line;
      line_start = k + 1;
    }
  }
  int col = 1;
  for (size_t k = line_start; k < offset; ++k)
    if ((static_cast<unsigned char>(source[k]) & 0xC0) != 0x80) ++col;
  return {line, col};
}

namespace {

enum class Tok { Text, BlockBegin, BlockEnd, VarBegin, VarEnd, Name, String, Int, Float, Op, End };

struct Token {
  Tok type;
  std::string value;
  size_t offset;
};

const char* tok_name(Tok t) {
  switch (t) {
    case Tok::Text: return "text";
    case Tok::BlockBegin: return "'{%'";
    case Tok::BlockEnd: return "'%}'";
    case Tok::VarBegin: return "'{{'";
    case Tok::VarEnd: return "'}}'";
    case Tok::Name: return "name";
    case Tok::String: return "string";
    case Tok::Int: return "integer";
    case Tok::Float: return "number";
    case Tok::Op: return "operator";
    case Tok::End: return "end of template";
  }
  return "?";
}

std::string describe(const Token& t) {
  switch (t.type) {
    case Tok::Name: return "'" + t.value + "'";
    case Tok::Op: return "'" + t.value + "'";
    case Tok::String: return "string literal";
    case Tok::Int:
    case Tok::Float: return "number " + t.value;
    default: return tok_name(t.type);
  }
}

class Failure {
 public:
  Failure(const std::string& source, const std::string& name) : source_(source), name_(name) {}
  [[noreturn]] void operator()(size_t offset, const std::string& detail) const {
    auto [line, col] = line_column(source_, offset);
    throw TemplateError(name_, line, col, detail);
  }

 private:
  const std::string& source_;
  const std::string& name_;
};

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_name_start(c) || (c >= '0' && c <= '9'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// ------------------------------------------------------------------ lexer

class Lexer {
 public:
  Lexer(const std::string& src, const Failure& fail) : src_(src), fail_(fail) {}

  std::vector<Token> run() {
    // Jinja2 (keep_trailing_newline=False) drops one trailing newline.
    size_t end = src_.size();
    if (end > 0 && src_[end - 1] == '\n') --end;
    end_ = end;
    size_t pos = 0;
    bool strip_next = false;  // '-' on the previous closing tag
    bool trim_next = false;   // trim_blocks after the previous block/comment
    while (true) {
      size_t tag = find_tag(pos);
      std::string raw = src_.substr(pos, (tag == std::string::npos ? end_ : tag) - pos);
      std::string text = raw;
      size_t lead = 0;
      if (strip_next) {
        while (lead < text.size() && is_ws(text[lead])) ++lead;
      } else if (trim_next && !text.empty() && text[0] == '\n') {
        lead = 1;
      }
      text.erase(0, lead);
      if (tag != std::string::npos) {
        char kind = src_[tag + 1];
        char mod = tag + 2 < end_ ? src_[tag + 2] : '\0';
        if (mod == '-') {
          while (!text.empty() && is_ws(text.back())) text.pop_back();
        } else if (kind != '{' && mod != '+') {
          // lstrip_blocks: spaces and tabs between a line start and a block tag.
          size_t nl = raw.rfind('\n');
          size_t start = nl == std::string::npos ? (pos == 0 ? 0 : std::string::npos) : nl + 1;
          if (start != std::string::npos &&
              std::all_of(raw.begin() + start, raw.end(), [](char c) { return c == ' ' || c == '\t'; })) {
            size_t cut = std::min(raw.size() - start, text.size());
            text.erase(text.size() - cut);
          }
        }
      }
      if (!text.empty()) tokens_.push_back({Tok::Text, text, pos + lead});
      if (tag == std::string::npos) break;

      char kind = src_[tag + 1];
      size_t p = tag + 2;
      if (p < end_ && (src_[p] == '-' || src_[p] == '+')) ++p;
      if (kind == '#') {
        size_t close = src_.find("#}", p);
        if (close == std::string::npos || close + 2 > end_) fail_(tag, "unclosed comment: missing '#}'");
        strip_next = close > p && src_[close - 1] == '-';
        trim_next = !strip_next;
        pos = close + 2;
        continue;
      }
      if (kind == '%' && try_raw(tag, p, pos, strip_next, trim_next)) continue;
      bool is_block = kind == '%';
      tokens_.push_back({is_block ? Tok::BlockBegin : Tok::VarBegin, is_block ? "{%" : "{{", tag});
      bool minus = false;
      pos = lex_inside(p, is_block, tag, minus);
      strip_next = minus;
      trim_next = is_block && !minus;
    }
    tokens_.push_back({Tok::End, "", end_});
    return std::move(tokens_);
  }

 private:
  size_t find_tag(size_t from) const {
    for (size_t k = from; k + 1 < end_; ++k) {
      if (src_[k] == '{' && (src_[k + 1] == '{' || src_[k + 1] == '%' || src_[k + 1] == '#')) return k;
    }
    return std::string::npos;
  }

  // {% raw %}...{% endraw %}: the content is text, as is.
  bool try_raw(size_t tag, size_t p, size_t& pos, bool& strip_next, bool& trim_next) {
    size_t q = p;
    while (q < end_ && is_ws(src_[q])) ++q;
    if (src_.compare(q, 3, "raw") != 0 || (q + 3 < end_ && is_name_char(src_[q + 3]))) return false;
    q += 3;
    while (q < end_ && is_ws(src_[q])) ++q;
    bool minus = false;
    if (q < end_ && src_[q] == '-') { minus = true; ++q; }
    if (src_.compare(q, 2, "%}") != 0) fail_(q, "expected '%}' after 'raw'");
    size_t body = q + 2;
    // find {% endraw %}
    size_t search = body;
    while (true) {
      size_t t = src_.find("{%", search);
      if (t == std::string::npos || t >= end_) fail_(tag, "unclosed 'raw' block: missing '{% endraw %}'");
      size_t r = t + 2;
      bool lminus = r < end_ && src_[r] == '-';
      if (lminus) ++r;
      while (r < end_ && is_ws(src_[r])) ++r;
      if (src_.compare(r, 6, "endraw") == 0) {
        r += 6;
        while (r < end_ && is_ws(src_[r])) ++r;
        bool rminus = r < end_ && src_[r] == '-';
        if (rminus) ++r;
        if (src_.compare(r, 2, "%}") != 0) fail_(r, "expected '%}' after 'endraw'");
        std::string text = src_.substr(body, t - body);
        if (minus) text.erase(0, std::find_if(text.begin(), text.end(), [](char c) { return !is_ws(c); }) - text.begin());
        if (lminus) while (!text.empty() && is_ws(text.back())) text.pop_back();
        if (!text.empty()) tokens_.push_back({Tok::Text, text, body});
        pos = r + 2;
        strip_next = rminus;
        trim_next = !rminus;
        return true;
      }
      search = t + 2;
    }
  }

  size_t lex_inside(size_t p, bool is_block, size_t tag, bool& minus) {
    int braces = 0;
    while (true) {
      while (p < end_ && is_ws(src_[p])) ++p;
      if (p >= end_) fail_(tag, std::string("unclosed tag: missing '") + (is_block ? "%}" : "}}") + "'");
      char c = src_[p];
      // Closing delimiters.
      if (is_block) {
        if (c == '-' && src_.compare(p + 1, 2, "%}") == 0) {
          tokens_.push_back({Tok::BlockEnd, "%}", p});
          minus = true;
          return p + 3;
        }
        if (c == '%' && p + 1 < end_ && src_[p + 1] == '}') {
          tokens_.push_back({Tok::BlockEnd, "%}", p});
          return p + 2;
        }
      } else if (braces == 0) {
        if (c == '-' && src_.compare(p + 1, 2, "}}") == 0) {
          tokens_.push_back({Tok::VarEnd, "}}", p});
          minus = true;
          return p + 3;
        }
        if (c == '}' && p + 1 < end_ && src_[p + 1] == '}') {
          tokens_.push_back({Tok::VarEnd, "}}", p});
          return p + 2;
        }
      }
      if (is_name_start(c)) {
        size_t s = p;
        while (p < end_ && is_name_char(src_[p])) ++p;
        tokens_.push_back({Tok::Name, src_.substr(s, p - s), s});
        continue;
      }
      if (is_digit(c)) {
        size_t s = p;
        while (p < end_ && (is_digit(src_[p]) || src_[p] == '_')) ++p;
        bool is_float = false;
        bool after_dot = !tokens_.empty() && tokens_.back().type == Tok::Op && tokens_.back().value == ".";
        if (!after_dot && p + 1 < end_ && src_[p] == '.' && is_digit(src_[p + 1])) {
          is_float = true;
          ++p;
          while (p < end_ && (is_digit(src_[p]) || src_[p] == '_')) ++p;
        }
        if (!after_dot && p < end_ && (src_[p] == 'e' || src_[p] == 'E')) {
          size_t q = p + 1;
          if (q < end_ && (src_[q] == '+' || src_[q] == '-')) ++q;
          if (q < end_ && is_digit(src_[q])) {
            is_float = true;
            p = q;
            while (p < end_ && is_digit(src_[p])) ++p;
          }
        }
        std::string num = src_.substr(s, p - s);
        num.erase(std::remove(num.begin(), num.end(), '_'), num.end());
        tokens_.push_back({is_float ? Tok::Float : Tok::Int, num, s});
        continue;
      }
      if (c == '\'' || c == '"') {
        size_t s = p;
        tokens_.push_back({Tok::String, lex_string(p), s});
        continue;
      }
      static const char* ops2[] = {"**", "//", "==", "!=", "<=", ">="};
      bool matched = false;
      for (const char* op : ops2) {
        if (src_.compare(p, 2, op) == 0) {
          tokens_.push_back({Tok::Op, op, p});
          p += 2;
          matched = true;
          break;
        }
      }
      if (matched) continue;
      if (std::strchr("+-*/%~|.,:()[]{}<>=", c)) {
        if (c == '{') ++braces;
        if (c == '}') --braces;
        tokens_.push_back({Tok::Op, std::string(1, c), p});
        ++p;
        continue;
      }
      fail_(p, std::string("unexpected character '") + c + "'");
    }
  }

  static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  // Python string literal escapes.
  std::string lex_string(size_t& p) {
    size_t start = p;
    char quote = src_[p++];
    std::string out;
    while (true) {
      if (p >= end_) fail_(start, "unterminated string literal");
      char c = src_[p];
      if (c == quote) {
        ++p;
        return out;
      }
      if (c != '\\') {
        out += c;
        ++p;
        continue;
      }
      if (p + 1 >= end_) fail_(start, "unterminated string literal");
      char e = src_[p + 1];
      p += 2;
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'v': out += '\v'; break;
        case 'a': out += '\a'; break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case '\n': break;  // line continuation
        case 'x':
        case 'u':
        case 'U': {
          int n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          char32_t cp = 0;
          for (int k = 0; k < n; ++k) {
            int h = p + k < end_ ? hexval(src_[p + k]) : -1;
            if (h < 0) fail_(p - 2, std::string("invalid \\") + e + " escape in string literal");
            cp = cp * 16 + h;
          }
          p += n;
          utf8_append(out, cp);
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            char32_t cp = e - '0';
            for (int k = 0; k < 2 && p < end_ && src_[p] >= '0' && src_[p] <= '7'; ++k) cp = cp * 8 + (src_[p++] - '0');
            utf8_append(out, cp);
          } else {
            // Python keeps unknown escapes as written.
            out += '\\';
            out += e;
          }
      }
    }
  }

  const std::string& src_;
  const Failure& fail_;
  size_t end_ = 0;
  std::vector<Token> tokens_;
};

// ------------------------------------------------------------------ parser

const std::set<std::string> kFilters = {
    "abs", "capitalize", "count", "d", "default", "dictsort", "first", "float", "indent", "int", "items", "join",
    "last", "length", "list", "lower", "map", "max", "min", "reject", "rejectattr", "replace", "reverse", "round",
    "safe", "select", "selectattr", "sort", "string", "sum", "title", "tojson", "trim", "unique", "upper",
    "wordcount", "batch", "attr"};
const std::set<std::string> kTests = {
    "defined", "undefined", "none", "boolean", "false", "true", "integer", "float", "number", "string",
    "mapping", "iterable", "sequence", "callable", "odd", "even", "divisibleby", "eq", "equalto", "==", "ne",
    "!=", "lt", "<", "lessthan", "le", "<=", "gt", ">", "greaterthan", "ge", ">=", "in", "lower", "upper",
    "sameas", "filter", "test"};
const std::set<std::string> kUnsupportedStatements = {
    "call", "include", "import", "from", "extends", "block", "with", "autoescape", "do", "trans", "pluralize"};

class Parser {
 public:
  Parser(std::vector<Token> tokens, const Failure& fail) : t_(std::move(tokens)), fail_(fail) {}

  // Deepest nesting of blocks and expressions (parentheses, unary
  // operators, `not`): the parser and the renderer recurse once per level,
  // and a hostile template must not overflow the stack.
  static constexpr int kMaxNesting = 200;
  struct Nest {
    Parser& p;
    Nest(Parser& parser, size_t offset) : p(parser) {
      if (++p.depth_ > kMaxNesting)
        p.fail_(offset, "nested more than " + std::to_string(kMaxNesting) + " levels deep");
    }
    ~Nest() { --p.depth_; }
  };

  std::vector<NodePtr> run() {
    auto body = parse_body({});
    if (peek().type != Tok::End) fail_(peek().offset, "unexpected " + describe(peek()));
    return body;
  }

 private:
  const Token& peek(size_t k = 0) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  const Token& next() {
    const Token& tok = t_[i_];
    if (i_ + 1 < t_.size()) ++i_;
    return tok;
  }
  bool is_op(const char* op, size_t k = 0) const { return peek(k).type == Tok::Op && peek(k).value == op; }
  bool is_name(const char* n, size_t k = 0) const { return peek(k).type == Tok::Name && peek(k).value == n; }
  void expect_op(const char* op, const char* context) {
    if (!is_op(op)) fail_(peek().offset, std::string("expected '") + op + "' " + context + ", found " + describe(peek()));
    next();
  }
  void expect(Tok type, const char* context) {
    if (peek().type != type)
      fail_(peek().offset, std::string("expected ") + tok_name(type) + " " + context + ", found " + describe(peek()));
    next();
  }
  std::string expect_name(const char* context) {
    if (peek().type != Tok::Name) fail_(peek().offset, std::string("expected a name ") + context + ", found " + describe(peek()));
    return next().value;
  }
  NodePtr make(NodeType t, size_t off) { return std::make_shared<Node>(t, off); }

  // Statements until a block tag whose keyword is in `ends` (not consumed).
  std::vector<NodePtr> parse_body(const std::set<std::string>& ends) {
    Nest nest(*this, peek().offset);
    std::vector<NodePtr> out;
    while (true) {
      const Token& tok = peek();
      if (tok.type == Tok::End) {
        if (!ends.empty()) {
          std::string expected;
          for (const auto& e : ends) expected += (expected.empty() ? "'" : " or '") + e + "'";
          fail_(tok.offset, "unexpected end of template: expected " + expected);
        }
        return out;
      }
      if (tok.type == Tok::Text) {
        auto n = make(NodeType::Text, tok.offset);
        n->literal = Value::string(tok.value);
        out.push_back(n);
        next();
        continue;
      }
      if (tok.type == Tok::VarBegin) {
        size_t off = next().offset;
        auto n = make(NodeType::Output, off);
        n->a = parse_tuple_expr();
        expect(Tok::VarEnd, "to close the expression");
        out.push_back(n);
        continue;
      }
      if (tok.type == Tok::BlockBegin) {
        const Token& kw = peek(1);
        if (kw.type != Tok::Name) fail_(kw.offset, "expected a statement keyword after '{%', found " + describe(kw));
        if (ends.count(kw.value)) return out;
        out.push_back(parse_statement());
        continue;
      }
      fail_(tok.offset, "unexpected " + describe(tok));
    }
  }

  // At '{%' keyword.
  NodePtr parse_statement() {
    next();  // {%
    const Token kw = next();
    const std::string& k = kw.value;
    if (k == "if") return parse_if(kw.offset);
    if (k == "for") return parse_for(kw.offset);
    if (k == "set") return parse_set(kw.offset);
    if (k == "macro") return parse_macro(kw.offset);
    if (k == "break" || k == "continue") {
      expect(Tok::BlockEnd, ("after '" + k + "'").c_str());
      return make(k == "break" ? NodeType::Break : NodeType::Continue, kw.offset);
    }
    if (k == "filter") {
      auto n = make(NodeType::FilterBlock, kw.offset);
      n->a = parse_filter_chain(nullptr, kw.offset);
      expect(Tok::BlockEnd, "after the filter");
      n->body = parse_body({"endfilter"});
      end_tag("endfilter");
      return n;
    }
    if (k == "generation") {
      auto n = make(NodeType::Scope, kw.offset);
      expect(Tok::BlockEnd, "after 'generation'");
      n->body = parse_body({"endgeneration"});
      end_tag("endgeneration");
      return n;
    }
    if (kUnsupportedStatements.count(k)) fail_(kw.offset, "unsupported statement '" + k + "'");
    static const std::set<std::string> ends = {"endif", "endfor", "endset", "endmacro", "endfilter", "else",
                                               "elif", "endgeneration", "endraw", "endcall", "endblock"};
    if (ends.count(k)) fail_(kw.offset, "unexpected '" + k + "' without a matching opening statement");
    fail_(kw.offset, "unknown statement '" + k + "'");
  }

  void end_tag(const char* name) {
    expect(Tok::BlockBegin, "");
    next();  // the keyword (checked by parse_body)
    expect(Tok::BlockEnd, (std::string("after '") + name + "'").c_str());
  }

  NodePtr parse_if(size_t off) {
    auto n = make(NodeType::If, off);
    n->items.push_back(parse_expr());
    expect(Tok::BlockEnd, "after the 'if' condition");
    n->branches.push_back(parse_body({"elif", "else", "endif"}));
    while (true) {
      next();  // {%
      std::string kw = next().value;
      if (kw == "elif") {
        n->items.push_back(parse_expr());
        expect(Tok::BlockEnd, "after the 'elif' condition");
        n->branches.push_back(parse_body({"elif", "else", "endif"}));
      } else if (kw == "else") {
        expect(Tok::BlockEnd, "after 'else'");
        n->else_body = parse_body({"endif"});
        end_tag("endif");
        return n;
      } else {
        expect(Tok::BlockEnd, "after 'endif'");
        return n;
      }
    }
  }

  std::vector<std::string> parse_targets(const char* context) {
    std::vector<std::string> names;
    bool paren = is_op("(");
    if (paren) next();
    names.push_back(expect_name(context));
    while (is_op(",")) {
      next();
      if (peek().type != Tok::Name) break;
      names.push_back(expect_name(context));
    }
    if (paren) expect_op(")", context);
    return names;
  }

  NodePtr parse_for(size_t off) {
    auto n = make(NodeType::For, off);
    n->targets = parse_targets("as the loop variable");
    if (!is_name("in")) fail_(peek().offset, "expected 'in' after the loop variable, found " + describe(peek()));
    next();
    n->a = parse_tuple_expr(/*with_condexpr=*/false);
    if (is_name("if")) {
      next();
      n->b = parse_expr();
    }
    if (is_name("recursive")) fail_(peek().offset, "unsupported construct 'recursive' loop");
    expect(Tok::BlockEnd, "after the 'for' header");
    n->body = parse_body({"else", "endfor"});
    next();  // {%
    if (next().value == "else") {
      expect(Tok::BlockEnd, "after 'else'");
      n->else_body = parse_body({"endfor"});
      end_tag("endfor");
    } else {
      expect(Tok::BlockEnd, "after 'endfor'");
    }
    return n;
  }

  NodePtr parse_set(size_t off) {
    size_t target_off = peek().offset;
    std::string first = expect_name("after 'set'");
    if (is_op(".")) {
      next();
      auto n = make(NodeType::Set, off);
      n->targets = {first};
      n->name = expect_name("after '.' in the assignment target");
      expect_op("=", "in the 'set' statement");
      n->a = parse_tuple_expr();
      expect(Tok::BlockEnd, "after the 'set' statement");
      return n;
    }
    std::vector<std::string> names = {first};
    while (is_op(",")) {
      next();
      names.push_back(expect_name("in the assignment target"));
    }
    if (is_op("=")) {
      next();
      auto n = make(NodeType::Set, off);
      n->targets = names;
      n->a = parse_tuple_expr();
      expect(Tok::BlockEnd, "after the 'set' statement");
      return n;
    }
    if (names.size() != 1) fail_(target_off, "a block 'set' assigns one name");
    auto n = make(NodeType::SetBlock, off);
    n->targets = names;
    if (is_op("|")) n->a = parse_filter_chain(nullptr, peek().offset);
    expect(Tok::BlockEnd, "after the 'set' statement");
    n->body = parse_body({"endset"});
    end_tag("endset");
    return n;
  }

  NodePtr parse_macro(size_t off) {
    auto n = make(NodeType::Macro, off);
    n->name = expect_name("after 'macro'");
    expect_op("(", "after the macro name");
    while (!is_op(")")) {
      std::string param = expect_name("as a macro parameter");
      NodePtr def;
      if (is_op("=")) {
        next();
        def = parse_expr();
      }
      n->kwargs.emplace_back(param, def);
      if (!is_op(")")) expect_op(",", "between macro parameters");
    }
    next();
    expect(Tok::BlockEnd, "after the macro signature");
    n->body = parse_body({"endmacro"});
    end_tag("endmacro");
    return n;
  }

  // ---------------------------------------------------------------- expressions

  // expr [, expr]* -> tuple
  NodePtr parse_tuple_expr(bool with_condexpr = true) {
    size_t off = peek().offset;
    NodePtr first = with_condexpr ? parse_expr() : parse_or();
    if (!is_op(",")) return first;
    auto t = make(NodeType::Tuple, off);
    t->items.push_back(first);
    while (is_op(",")) {
      next();
      if (peek().type == Tok::BlockEnd || peek().type == Tok::VarEnd || is_op(")") || is_name("if")) break;
      t->items.push_back(with_condexpr ? parse_expr() : parse_or());
    }
    return t;
  }

  NodePtr parse_expr() {
    size_t off = peek().offset;
    NodePtr e = parse_or();
    while (is_name("if")) {
      next();
      auto c = make(NodeType::CondExpr, off);
      c->a = e;
      c->b = parse_or();
      if (is_name("else")) {
        next();
        c->c = parse_expr();
      }
      e = c;
    }
    return e;
  }

  NodePtr parse_or() {
    NodePtr left = parse_and();
    while (is_name("or")) {
      size_t off = next().offset;
      auto n = make(NodeType::Or, off);
      n->a = left;
      n->b = parse_and();
      left = n;
    }
    return left;
  }

  NodePtr parse_and() {
    NodePtr left = parse_not();
    while (is_name("and")) {
      size_t off = next().offset;
      auto n = make(NodeType::And, off);
      n->a = left;
      n->b = parse_not();
      left = n;
    }
    return left;
  }

  NodePtr parse_not() {
    Nest nest(*this, peek().offset);
    if (is_name("not")) {
      size_t off = next().offset;
      auto n = make(NodeType::Not, off);
      n->a = parse_not();
      return n;
    }
    return parse_compare();
  }

  NodePtr parse_compare() {
    size_t off = peek().offset;
    NodePtr first = parse_math1();
    std::shared_ptr<Node> cmp;
    while (true) {
      std::string op;
      const Token& tok = peek();
      if (tok.type == Tok::Op && (tok.value == "==" || tok.value == "!=" || tok.value == "<" || tok.value == ">" ||
                                  tok.value == "<=" || tok.value == ">=")) {
        op = tok.value;
        next();
      } else if (is_name("in")) {
        op = "in";
        next();
      } else if (is_name("not") && is_name("in", 1)) {
        op = "not in";
        next();
        next();
      } else {
        break;
      }
      if (!cmp) {
        cmp = make(NodeType::Compare, off);
        cmp->items.push_back(first);
      }
      cmp->ops.push_back(op);
      cmp->items.push_back(parse_math1());
    }
    return cmp ? cmp : first;
  }

  NodePtr binary(const std::string& op, NodePtr a, NodePtr b, size_t off) {
    auto n = make(NodeType::Binary, off);
    n->name = op;
    n->a = std::move(a);
    n->b = std::move(b);
    return n;
  }

  NodePtr parse_math1() {
    NodePtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Token& op = next();
      left = binary(op.value, left, parse_concat(), op.offset);
    }
    return left;
  }

  NodePtr parse_concat() {
    NodePtr left = parse_math2();
    while (is_op("~")) {
      const Token& op = next();
      left = binary("~", left, parse_math2(), op.offset);
    }
    return left;
  }

  NodePtr parse_math2() {
    NodePtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& op = next();
      left = binary(op.value, left, parse_pow(), op.offset);
    }
    return left;
  }

  NodePtr parse_pow() {
    NodePtr left = parse_unary(true);
    while (is_op("**")) {
      const Token& op = next();
      left = binary("**", left, parse_unary(true), op.offset);
    }
    return left;
  }

  NodePtr parse_unary(bool with_filter) {
    Nest nest(*this, peek().offset);
    NodePtr node;
    if (is_op("-") || is_op("+")) {
      const Token& op = next();
      node = make(NodeType::Unary, op.offset);
      node->name = op.value;
      node->a = parse_unary(false);
    } else {
      node = parse_postfix(parse_primary());
    }
    if (with_filter) node = parse_filters_and_tests(node);
    return node;
  }

  NodePtr parse_primary() {
    const Token tok = next();
    switch (tok.type) {
      case Tok::Name: {
        static const std::set<std::string> reserved = {"and", "or", "not", "in", "is", "if", "else"};
        if (tok.value == "true" || tok.value == "True" || tok.value == "false" || tok.value == "False") {
          auto n = make(NodeType::Literal, tok.offset);
          n->literal = Value::boolean(tok.value[0] == 't' || tok.value[0] == 'T');
          return n;
        }
        if (tok.value == "none" || tok.value == "None") {
          auto n = make(NodeType::Literal, tok.offset);
          n->literal = Value::none();
          return n;
        }
        if (reserved.count(tok.value)) fail_(tok.offset, "unexpected '" + tok.value + "' where a value was expected");
        auto n = make(NodeType::Name, tok.offset);
        n->name = tok.value;
        return n;
      }
      case Tok::String: {
        std::string s = tok.value;
        while (peek().type == Tok::String) s += next().value;  // adjacent literals concatenate
        auto n = make(NodeType::Literal, tok.offset);
        n->literal = Value::string(s);
        return n;
      }
      case Tok::Int: {
        auto n = make(NodeType::Literal, tok.offset);
        try {
          n->literal = Value::integer(std::stoll(tok.value));
        } catch (const std::exception&) {
          fail_(tok.offset, "integer literal out of range: " + tok.value);
        }
        return n;
      }
      case Tok::Float: {
        auto n = make(NodeType::Literal, tok.offset);
        n->literal = Value::floating(std::strtod(tok.value.c_str(), nullptr));  // 1e400 -> inf, as Python
        return n;
      }
      case Tok::Op: {
        if (tok.value == "(") {
          if (is_op(")")) {
            next();
            return make(NodeType::Tuple, tok.offset);
          }
          NodePtr e = parse_expr();
          if (is_op(",")) {
            auto t = make(NodeType::Tuple, tok.offset);
            t->items.push_back(e);
            while (is_op(",")) {
              next();
              if (is_op(")")) break;
              t->items.push_back(parse_expr());
            }
            e = t;
          }
          expect_op(")", "to close the parenthesis");
          return e;
        }
        if (tok.value == "[") {
          auto n = make(NodeType::List, tok.offset);
          while (!is_op("]")) {
            n->items.push_back(parse_expr());
            if (!is_op("]")) expect_op(",", "between list items");
          }
          next();
          return n;
        }
        if (tok.value == "{") {
          auto n = make(NodeType::Dict, tok.offset);
          while (!is_op("}")) {
            n->items.push_back(parse_expr());
            expect_op(":", "between a dict key and its value");
            n->items.push_back(parse_expr());
            if (!is_op("}")) expect_op(",", "between dict items");
          }
          next();
          return n;
        }
        break;
      }
      default: break;
    }
    fail_(tok.offset, "unexpected " + describe(tok) + " where a value was expected");
  }

  void parse_call_args(Node& n) {
    // at '('
    next();
    while (!is_op(")")) {
      if (is_op("*") || is_op("**")) fail_(peek().offset, "unsupported construct: argument unpacking with '*'");
      if (peek().type == Tok::Name && is_op("=", 1)) {
        std::string key = next().value;
        next();
        n.kwargs.emplace_back(key, parse_expr());
      } else {
        if (!n.kwargs.empty()) fail_(peek().offset, "positional argument after keyword argument");
        n.items.push_back(parse_expr());
      }
      if (!is_op(")")) expect_op(",", "between arguments");
    }
    next();
  }

  NodePtr parse_postfix(NodePtr node) {
    while (true) {
      if (is_op(".")) {
        size_t off = next().offset;
        const Token& tok = peek();
        if (tok.type == Tok::Name) {
          auto n = make(NodeType::GetAttr, off);
          n->a = node;
          n->name = next().value;
          node = n;
        } else if (tok.type == Tok::Int) {
          auto n = make(NodeType::GetItem, off);
          n->a = node;
          n->b = make(NodeType::Literal, tok.offset);
          n->b->literal = Value::integer(std::strtoll(next().value.c_str(), nullptr, 10));
          node = n;
        } else {
          fail_(tok.offset, "expected an attribute name after '.', found " + describe(tok));
        }
      } else if (is_op("[")) {
        size_t off = next().offset;
        NodePtr parts[3];
        int part = 0;
        bool is_slice = false;
        while (!is_op("]")) {
          if (is_op(":")) {
            next();
            is_slice = true;
            if (++part > 2) fail_(peek().offset, "too many ':' in slice");
            continue;
          }
          if (parts[part]) fail_(peek().offset, "expected ']' or ':' in subscript, found " + describe(peek()));
          parts[part] = parse_expr();
        }
        next();
        if (is_slice) {
          auto n = make(NodeType::Slice, off);
          n->a = node;
          n->items = {parts[0], parts[1], parts[2]};
          node = n;
        } else {
          if (!parts[0]) fail_(off, "empty subscript '[]'");
          auto n = make(NodeType::GetItem, off);
          n->a = node;
          n->b = parts[0];
          node = n;
        }
      } else if (is_op("(")) {
        auto n = make(NodeType::Call, node->offset);
        n->a = node;
        parse_call_args(*n);
        node = n;
      } else {
        return node;
      }
    }
  }

  // Filters of a `{% filter %}` block or block set: operand null.
  NodePtr parse_filter_chain(NodePtr operand, size_t off) {
    (void)off;
    NodePtr node = operand;
    bool first = true;
    while (first || is_op("|")) {
      if (!first || is_op("|")) next();
      first = false;
      node = parse_one_filter(node);
    }
    return node;
  }

  NodePtr parse_one_filter(NodePtr operand) {
    const Token tok = peek();
    std::string name = expect_name("as a filter name");
    while (is_op(".")) {  // dotted filter names
      next();
      name += "." + expect_name("in the filter name");
    }
    if (!kFilters.count(name)) fail_(tok.offset, "unsupported filter '" + name + "'");
    auto n = make(NodeType::Filter, tok.offset);
    n->a = operand;
    n->name = name;
    if (is_op("(")) parse_call_args(*n);
    return n;
  }

  NodePtr parse_filters_and_tests(NodePtr node) {
    while (true) {
      if (is_op("|")) {
        next();
        node = parse_one_filter(node);
      } else if (is_name("is")) {
        next();
        bool negate = false;
        if (is_name("not")) {
          next();
          negate = true;
        }
        const Token tok = peek();
        std::string name;
        if (tok.type == Tok::Name) name = next().value;
        else if (tok.type == Tok::Op && (tok.value == "==" || tok.value == "!=" || tok.value == "<" ||
                                         tok.value == ">" || tok.value == "<=" || tok.value == ">=")) name = next().value;
        else fail_(tok.offset, "expected a test name after 'is', found " + describe(tok));
        if (name == "none" || name == "None") name = "none";
        if (name == "true" || name == "True") name = "true";
        if (name == "false" || name == "False") name = "false";
        if (!kTests.count(name)) fail_(tok.offset, "unsupported test '" + name + "'");
        auto n = make(NodeType::Test, tok.offset);
        n->a = node;
        n->name = name;
        n->negate = negate;
        if (is_op("(")) {
          parse_call_args(*n);
        } else {
          const Token& nt = peek();
          static const std::set<std::string> stop = {"else", "or", "and", "if", "in", "not", "is"};
          bool arg = nt.type == Tok::String || nt.type == Tok::Int || nt.type == Tok::Float ||
                     (nt.type == Tok::Name && !stop.count(nt.value)) || (nt.type == Tok::Op && (nt.value == "[" || nt.value == "{"));
          if (arg) n->items.push_back(parse_postfix(parse_primary()));
        }
        node = n;
      } else if (is_op("(")) {
        auto n = make(NodeType::Call, peek().offset);
        n->a = node;
        parse_call_args(*n);
        node = n;
      } else {
        return node;
      }
    }
  }

  std::vector<Token> t_;
  size_t i_ = 0;
  int depth_ = 0;
  const Failure& fail_;
};

}  // namespace

std::vector<NodePtr> parse_template(const std::string& source, const std::string& name) {
  Failure fail(source, name);
  Lexer lexer(source, fail);
  Parser parser(lexer.run(), fail);
  return parser.run();
}

}  // namespace chatvec::jinja
