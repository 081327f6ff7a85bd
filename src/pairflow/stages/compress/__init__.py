"""compress: build the variants (fp32/int8 ONNX, distilled students), measure them on
held-out rows and pick the one that ships within the latency budget."""
