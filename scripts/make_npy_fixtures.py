"""Write .npy files with numpy for kiln's reader and writer tests (crates/kiln-data/tests/npy_numpy.rs).

Usage: python scripts/make_npy_fixtures.py crates/kiln-data/tests/fixtures/npy
- f32_2x3x4.npy : np.arange(24, dtype='<f4').reshape(2, 3, 4) / 7   (what `kiln transform` writes: CHW f32)
- u8_5x2.npy    : np.arange(10, dtype='u1').reshape(5, 2) * 25
- f32_fortran.npy: the f32 array in Fortran order (kiln must refuse or handle it, never misread it)
- f64_3.npy     : a dtype kiln does not read (an error, not garbage)
"""
import os, sys
import numpy as np

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
a = (np.arange(24, dtype="<f4").reshape(2, 3, 4) / np.float32(7)).astype("<f4")
np.save(os.path.join(out, "f32_2x3x4.npy"), a)
np.save(os.path.join(out, "u8_5x2.npy"), (np.arange(10, dtype="u1").reshape(5, 2) * 25).astype("u1"))
np.save(os.path.join(out, "f32_fortran.npy"), np.asfortranarray(a))
np.save(os.path.join(out, "f64_3.npy"), np.array([1.0, 2.0, 3.0]))
print("numpy", np.__version__)
