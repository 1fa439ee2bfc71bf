"""3D CycleGAN PET image harmonizer for harmkit.

Modules, from the bottom up (only :mod:`.harmonizer` and :mod:`.plugin` know
about SimpleITK and harmkit; everything else needs only torch and numpy, so it
runs on a bare GPU machine):

- :mod:`.config`    -- every hyper-parameter, the ``paper`` and ``quick`` profiles
- :mod:`.intensity` -- the fixed, invertible SUV <-> network intensity transform
- :mod:`.nets`      -- 3D ResNet generator and 3D PatchGAN discriminator
- :mod:`.training`  -- the CycleGAN training loop with safe, resumable checkpoints
- :mod:`.inference` -- bounded-memory sliding-window inference with Gaussian blending
- :mod:`.harmonizer`-- the :class:`~harmkit.interfaces.ImageHarmonizer` (SimpleITK side)
"""

__version__ = "0.9.0"
