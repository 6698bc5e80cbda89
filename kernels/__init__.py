"""vnpu.kernels"""
