"""Front ends: a model of another framework in, a vnpu.runtime.graph.Graph out."""
