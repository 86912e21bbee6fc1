"""The canonical op vocabulary: the only place op names are spelled.

Forward ops come out of capture; gradient ops are added by ``lipcert.gradient``.
"""
# inputs
INPUT = "input"
# linear (affine) forward ops
LINEAR = "linear"                # y = x W^T + b                         attrs: weight [out, in], bias [out] | None
CONV2D = "conv2d"                # attrs: weight, bias, stride, padding, dilation, groups (AvgPool2d is a depthwise conv2d)
CONV_T2D = "conv_transpose2d"    # attrs: weight, stride, padding, dilation, groups, output_padding (no bias)
RESHAPE = "reshape"              # per-sample reshape to node.shape
ADD = "add"                      # y = sum_i coeffs[i] * x_i            attrs: coeffs
SLICE = "slice"                  # y = x[..., start:stop:step along per-sample dim]  attrs: dim, start, stop, step
SLICE_T = "slice_t"              # transpose of slice: x placed into zeros of shape node.shape; attrs as SLICE
CONCAT = "concat"                # y = cat(x_i, per-sample dim)         attrs: dim
AFFINE = "affine"                # y = scale * x + shift (elementwise)  attrs: scale, shift (per-sample shape)
PERMUTE = "permute"              # y = x.permute(dims) of the per-sample dims   attrs: dims
GATHER = "gather"                # y[i] = x.flat[index[i]]               attrs: index (LongTensor, node.shape)
SCATTER = "scatter"              # transpose of gather: y.flat[index[i]] += x[i]  attrs: index (input's shape)
# nonlinear forward ops
RELU = "relu"
LEAKY_RELU = "leaky_relu"        # attrs: negative_slope
TANH = "tanh"
SIGMOID = "sigmoid"
MAXMIN = "maxmin"                # pairs along dim 1 (features/channels): (max, min)
# gradient-graph ops
RELU_GRAD = "relu_grad"          # h = s(z) * g, s in Clarke set of relu' / leaky_relu'; attrs: negative_slope, mode
TANH_DERIV = "tanh_deriv"        # d = tanh'(z)
SIGMOID_DERIV = "sigmoid_deriv"  # d = sigmoid'(z)
MUL = "mul"                      # h = d * g (bilinear)
MAXMIN_GRAD = "maxmin_grad"      # h = P(z)^T g, the permutation of a MaxMin pair chosen by the sign of z1 - z2

# What each op is (linear, piecewise linear, smooth) is its rule's business: lipcert.rules.
