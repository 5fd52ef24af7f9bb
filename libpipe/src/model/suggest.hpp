// "Did you mean": the closest of a set of names to a misspelt one.
#pragma once

#include <string>
#include <vector>

namespace libpipe {

// The candidate closest to `name` by case-insensitive edit distance, or "" when
// none is within a third of the name's length (at least 2 edits allowed).
std::string closest_name(const std::string& name, const std::vector<std::string>& candidates);

// " (did you mean 'X'?)" or "" — ready to append to a message.
std::string did_you_mean(const std::string& name, const std::vector<std::string>& candidates);

}  // namespace libpipe
