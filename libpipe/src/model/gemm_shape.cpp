// The usual GEMM sets of a layer's description (see pipe/gemm_shape.hpp).
#include "pipe/gemm_shape.hpp"

namespace libpipe {

void add_linear_gemms(std::vector<GemmShape>& gemms, const std::string& layer, std::int64_t rows, std::int64_t in,
                      std::int64_t out) {
  gemms.push_back({layer, "forward", false, true, rows, out, in, 1, false, 'm'});      // y = x W^T
  gemms.push_back({layer, "input grad", false, false, rows, in, out, 1, false, 'm'});  // dx = dy W
  gemms.push_back({layer, "weight grad", true, false, out, in, rows, 1, true, 'k'});   // dW += dy^T x
}

void add_attention_gemms(std::vector<GemmShape>& gemms, const std::string& layer, std::int64_t heads,
                         std::int64_t seq, std::int64_t head_dim) {
  const std::int64_t T = seq, D = head_dim;
  gemms.push_back({layer, "forward S=QK^T", false, true, T, T, D, heads, false, 'b'});
  gemms.push_back({layer, "forward O=PV", false, false, T, D, T, heads, false, 'b'});
  gemms.push_back({layer, "backward dP=dO V^T", false, true, T, T, D, heads, false, 'b'});
  gemms.push_back({layer, "backward dV=P^T dO", true, false, T, D, T, heads, false, 'b'});
  gemms.push_back({layer, "backward dQ=dS K", false, false, T, D, T, heads, false, 'b'});
  gemms.push_back({layer, "backward dK=dS^T Q", true, false, T, D, T, heads, false, 'b'});
}

}  // namespace libpipe
