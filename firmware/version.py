"""Which firmware this is: the human version and the integer build a node compares.

``provisioning/bundle.py`` writes this module anew into every bundle from the version and build it
is given (and records both in the bundle's manifest), so what a node says in its birth and
frames (``sw``/``fw``: ``"fw/" + VERSION``) and the build its OTA floor starts at (an OTA manifest
must name a higher one) are the bundle's, never a second copy kept by hand.  The values here are
the source tree's: what CPython runs (tests, the demo's virtual nodes) and what a bundle built
without an explicit version and build carries.
"""

VERSION = "0.2.0"
BUILD = 2
