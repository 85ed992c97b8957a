"""``esp32`` on the virtual ESP32: one factory app partition (no OTA slots), wake sources as no-ops.

A file-based board has no A/B app partitions, so there is nothing to roll back:
``Partition.mark_app_valid_cancel_rollback`` succeeds and does nothing, as on a factory image.
"""

WAKEUP_ALL_LOW = False
WAKEUP_ANY_HIGH = True
HEAP_DATA = 4
HEAP_EXEC = 1


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=4096):
        if id not in (Partition.BOOT, Partition.RUNNING, "factory"):
            raise ValueError("partition not found")
        self._info = (Partition.TYPE_APP, 0, 0x10000, 0x1F0000, "factory", False)

    @classmethod
    def find(cls, type=TYPE_APP, subtype=0xFF, label=None):
        if type == cls.TYPE_APP and label in (None, "factory"):
            return [cls(cls.RUNNING)]
        return []

    def info(self):
        return self._info

    def get_next_update(self):
        raise OSError(2)  # ENOENT: no OTA partitions on this board

    @staticmethod
    def mark_app_valid_cancel_rollback():
        pass


def wake_on_ext0(pin, level):
    pass


def wake_on_ext1(pins, level):
    pass


def wake_on_touch(wake):
    pass


def raw_temperature():
    return 120  # degrees F, the internal sensor's typical reading


def idf_heap_info(capabilities):
    return [(110000, 80000, 60000, 75000)]
