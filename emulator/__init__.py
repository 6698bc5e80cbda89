"""vnpu.emulator"""
