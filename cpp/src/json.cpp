#include "json.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace refiner_edge {
namespace json {

const Value* Value::get(const std::string& key) const {
    auto it = object.find(key);
    return it == object.end() ? nullptr : &it->second;
}

const char* typeName(const Value& v) {
    switch (v.type) {
        case Value::Type::Null: return "NoneType";
        case Value::Type::Bool: return "bool";
        case Value::Type::Int: return "int";
        case Value::Type::Float: return "float";
        case Value::Type::String: return "str";
        case Value::Type::Array: return "list";
        case Value::Type::Object: return "dict";
    }
    return "?";
}

namespace {

constexpr int kMaxDepth = 64;  // manifests nest 4 deep; a deeper document is refused, never a stack overflow

class Parser {
public:
    explicit Parser(const std::string& text) : s_(text) {}

    bool document(Value& out, std::string& error) {
        skip();
        if (!value(out, 0)) {
            error = where() + error_;
            return false;
        }
        skip();
        if (i_ != s_.size()) {
            error = where() + "extra data after the JSON value";
            return false;
        }
        return true;
    }

private:
    const std::string& s_;
    size_t i_ = 0;
    std::string error_;

    std::string where() const {
        size_t line = 1, col = 1;
        for (size_t k = 0; k < i_ && k < s_.size(); ++k) {
            if (s_[k] == '\n') { ++line; col = 1; } else { ++col; }
        }
        return "line " + std::to_string(line) + " column " + std::to_string(col) + ": ";
    }
    bool fail(const std::string& message) { error_ = message; return false; }
    void skip() {
        while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
    }
    bool literal(const char* word) {
        size_t n = std::strlen(word);
        if (s_.compare(i_, n, word) != 0) return fail("invalid value");
        i_ += n;
        return true;
    }

    bool value(Value& out, int depth) {
        if (depth > kMaxDepth) return fail("nested deeper than " + std::to_string(kMaxDepth) + " levels");
        if (i_ >= s_.size()) return fail("unexpected end of input");
        char c = s_[i_];
        switch (c) {
            case '{': return object(out, depth);
            case '[': return array(out, depth);
            case '"': out.type = Value::Type::String; return string(out.string);
            case 't': out.type = Value::Type::Bool; out.boolean = true; return literal("true");
            case 'f': out.type = Value::Type::Bool; out.boolean = false; return literal("false");
            case 'n': out.type = Value::Type::Null; return literal("null");
            default:
                if (c == '-' || (c >= '0' && c <= '9')) return number(out);
                return fail("invalid value");
        }
    }

    bool object(Value& out, int depth) {
        out.type = Value::Type::Object;
        ++i_;
        skip();
        if (i_ < s_.size() && s_[i_] == '}') { ++i_; return true; }
        for (;;) {
            skip();
            if (i_ >= s_.size() || s_[i_] != '"') return fail("expected a key in double quotes");
            std::string key;
            if (!string(key)) return false;
            skip();
            if (i_ >= s_.size() || s_[i_] != ':') return fail("expected ':'");
            ++i_;
            skip();
            Value v;
            if (!value(v, depth + 1)) return false;
            out.object[key] = std::move(v);
            skip();
            if (i_ < s_.size() && s_[i_] == ',') { ++i_; continue; }
            if (i_ < s_.size() && s_[i_] == '}') { ++i_; return true; }
            return fail("expected ',' or '}'");
        }
    }

    bool array(Value& out, int depth) {
        out.type = Value::Type::Array;
        ++i_;
        skip();
        if (i_ < s_.size() && s_[i_] == ']') { ++i_; return true; }
        for (;;) {
            skip();
            Value v;
            if (!value(v, depth + 1)) return false;
            out.array.push_back(std::move(v));
            skip();
            if (i_ < s_.size() && s_[i_] == ',') { ++i_; continue; }
            if (i_ < s_.size() && s_[i_] == ']') { ++i_; return true; }
            return fail("expected ',' or ']'");
        }
    }

    bool hex4(unsigned& code) {
        if (i_ + 4 > s_.size()) return fail("truncated \\u escape");
        code = 0;
        for (int k = 0; k < 4; ++k) {
            char h = s_[i_++];
            code <<= 4;
            if (h >= '0' && h <= '9') code |= unsigned(h - '0');
            else if (h >= 'a' && h <= 'f') code |= unsigned(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F') code |= unsigned(h - 'A' + 10);
            else return fail("invalid \\u escape");
        }
        return true;
    }

    static void utf8(unsigned cp, std::string& out) {
        if (cp < 0x80) {
            out += char(cp);
        } else if (cp < 0x800) {
            out += char(0xC0 | (cp >> 6));
            out += char(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out += char(0xE0 | (cp >> 12));
            out += char(0x80 | ((cp >> 6) & 0x3F));
            out += char(0x80 | (cp & 0x3F));
        } else {
            out += char(0xF0 | (cp >> 18));
            out += char(0x80 | ((cp >> 12) & 0x3F));
            out += char(0x80 | ((cp >> 6) & 0x3F));
            out += char(0x80 | (cp & 0x3F));
        }
    }

    bool string(std::string& out) {
        ++i_;  // opening quote
        for (;;) {
            if (i_ >= s_.size()) return fail("unterminated string");
            unsigned char c = static_cast<unsigned char>(s_[i_++]);
            if (c == '"') return true;
            if (c < 0x20) return fail("control character in a string");
            if (c != '\\') { out += char(c); continue; }
            if (i_ >= s_.size()) return fail("unterminated string");
            char e = s_[i_++];
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    unsigned cp;
                    if (!hex4(cp)) return false;
                    if (cp >= 0xD800 && cp < 0xDC00 && s_.compare(i_, 2, "\\u") == 0) {
                        size_t save = i_;
                        i_ += 2;
                        unsigned low;
                        if (!hex4(low)) return false;
                        if (low >= 0xDC00 && low < 0xE000) cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                        else i_ = save;
                    }
                    utf8(cp, out);
                    break;
                }
                default: return fail("invalid escape in a string");
            }
        }
    }

    bool number(Value& out) {
        size_t start = i_;
        bool integral = true;
        if (s_[i_] == '-') ++i_;
        if (i_ >= s_.size() || !(s_[i_] >= '0' && s_[i_] <= '9')) return fail("invalid number");
        if (s_[i_] == '0') ++i_;
        else while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
        if (i_ < s_.size() && s_[i_] == '.') {
            integral = false;
            ++i_;
            if (i_ >= s_.size() || !(s_[i_] >= '0' && s_[i_] <= '9')) return fail("invalid number");
            while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
        }
        if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
            integral = false;
            ++i_;
            if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
            if (i_ >= s_.size() || !(s_[i_] >= '0' && s_[i_] <= '9')) return fail("invalid number");
            while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
        }
        std::string text = s_.substr(start, i_ - start);
        out.number = std::strtod(text.c_str(), nullptr);
        if (integral) {
            errno = 0;
            out.integer = std::strtoll(text.c_str(), nullptr, 10);
            if (errno == ERANGE) return fail("integer out of range");
            out.type = Value::Type::Int;
        } else {
            out.type = Value::Type::Float;
        }
        return true;
    }
};

}  // namespace

bool parse(const std::string& text, Value& out, std::string& error) {
    Parser p(text);
    out = Value();
    return p.document(out, error);
}

}  // namespace json
}  // namespace refiner_edge
