// The pybind11 module mmkeras._cpu_kernels: the CPU kernels of every family
// on numpy float32 arrays (pybind_<family>.cc), and which ISA level runs.
// Used by the torch glue (zero-copy views of CPU tensors) and by tests.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "common.h"  // num_threads()
#include "isa.h"

namespace py = pybind11;

void register_attention(py::module_& m);
void register_fusion(py::module_& m);
void register_contrastive(py::module_& m);

PYBIND11_MODULE(_cpu_kernels, m) {
  m.doc() = "mmkeras C++ CPU kernels (numpy adapter).";
  m.def("num_threads", &mmkeras::num_threads);
  m.def("isa", &mmkeras::active_isa,
        "The ISA level the kernels run (MMKERAS_CPU_ISA, else the best this "
        "CPU supports).");
  m.def("isa_levels", &mmkeras::isa_levels, "The levels this build has.");
  m.def("supported_isa_levels", &mmkeras::supported_isa_levels,
        "The levels this CPU runs.");
  register_attention(m);
  register_fusion(m);
  register_contrastive(m);
}
