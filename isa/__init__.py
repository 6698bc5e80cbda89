"""vnpu.isa"""
