"""``esp`` on the virtual ESP32 (what a default boot.py may call)."""


def osdebug(level, *args):
    pass


def flash_size():
    return 4 * 1024 * 1024


def flash_user_start():
    return 0x200000
