"""vnpu.driver"""
