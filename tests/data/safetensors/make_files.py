"""Write the safetensors file the tests read, with the safetensors library itself (from the
repository root: ``python tests/data/safetensors/make_files.py``)."""
import pathlib
import sys

from safetensors.numpy import save_file

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3]))
from tests.test_serialization import safetensors_library_arrays  # noqa: E402

save_file(safetensors_library_arrays(), str(pathlib.Path(__file__).parent / "numpy.safetensors"),
          metadata={"source": "safetensors.numpy"})
