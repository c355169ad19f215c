// A small JSON reader for manifests (RFC 8259; no extensions). Internal to the library.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace refiner_edge {
namespace json {

struct Value {
    enum class Type { Null, Bool, Int, Float, String, Array, Object };
    Type type = Type::Null;
    bool boolean = false;
    long long integer = 0;   // Int: a number written without a fraction or exponent (Python's int)
    double number = 0;       // Int and Float
    std::string string;
    std::vector<Value> array;
    std::map<std::string, Value> object;  // a repeated key keeps its last value, as Python's json does

    const Value* get(const std::string& key) const;
};

// Parse `text`; on failure returns false and sets `error` ("line 3 column 7: expected ':'").
bool parse(const std::string& text, Value& out, std::string& error);
// Python's name for a JSON value's type ("int", "str", "dict", ...), for messages matching the Python reader.
const char* typeName(const Value& v);

}  // namespace json
}  // namespace refiner_edge
