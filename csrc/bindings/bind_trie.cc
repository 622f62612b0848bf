// Bindings of the trie build and of TrieView, the pointer bundle every kernel reads.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "common.h"
#include "igdbeam/errors.h"
#include "igdbeam/kernels.h"
#include "igdbeam/trie.h"

namespace igdbeam::bindings {

namespace {

py::dict Build(py::array_t<int64_t, py::array::c_style | py::array::forcecast> offsets,
               py::array_t<int64_t, py::array::c_style | py::array::forcecast> tokens,
               py::object weights, int entropy_mode, int64_t vocab_size, double equal_ig_rtol) {
  IGD_CHECK_ARG(offsets.ndim() == 1 && offsets.size() >= 1, "offsets must be a 1-D array");
  const int64_t num_items = offsets.size() - 1;
  IGD_CHECK_ARG(offsets.at(num_items) == tokens.size(), "offsets end at ", offsets.at(num_items),
                " but there are ", tokens.size(), " tokens");
  for (int64_t i = 0; i < num_items; ++i) {
    IGD_CHECK_ARG(offsets.at(i) <= offsets.at(i + 1), "offsets must not decrease (item ", i, ")");
  }
  py::array_t<double, py::array::c_style | py::array::forcecast> w;
  const double* weight_ptr = nullptr;
  if (!weights.is_none()) {
    w = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(weights);
    IGD_CHECK_ARG(w && w.ndim() == 1 && w.size() == num_items,
                  "weights must have one value per item (", num_items, "), got ",
                  w ? w.size() : -1);
    weight_ptr = w.data();
  }
  IGD_CHECK_ARG(entropy_mode == 0 || entropy_mode == 1, "entropy mode must be 0 or 1");
  TokenPaths paths{offsets.data(), tokens.data(), num_items};
  BuildOptions options;
  options.entropy = static_cast<EntropyMode>(entropy_mode);
  options.vocab_size = vocab_size;
  options.equal_ig_rtol = equal_ig_rtol;
  TrieArrays t;
  {
    py::gil_scoped_release release;
    t = BuildTrie(paths, weight_ptr, options);
  }
  py::dict out;
  out["max_depth"] = t.max_depth;
  out["max_fanout"] = t.max_fanout;
  out["child_offsets"] = ToNumpy(std::move(t.child_offsets));
  out["token"] = ToNumpy(std::move(t.token));
  out["parent"] = ToNumpy(std::move(t.parent));
  out["depth"] = ToNumpy(std::move(t.depth));
  out["entropy"] = ToNumpy(std::move(t.entropy));
  out["info_gain"] = ToNumpy(std::move(t.info_gain));
  out["info_gain_norm"] = ToNumpy(std::move(t.info_gain_norm));
  out["zero_ig"] = ToNumpy(std::move(t.zero_ig));
  out["leaf_nodes"] = ToNumpy(std::move(t.leaf_nodes));
  out["leaf_item_offsets"] = ToNumpy(std::move(t.leaf_item_offsets));
  out["leaf_items"] = ToNumpy(std::move(t.leaf_items));
  out["item_leaf"] = ToNumpy(std::move(t.item_leaf));
  out["leaf_weight"] = ToNumpy(std::move(t.leaf_weight));
  return out;
}

TrieView MakeView(int64_t num_nodes, std::uintptr_t child_offsets, std::uintptr_t token,
                  std::uintptr_t parent, std::uintptr_t depth, std::uintptr_t entropy,
                  std::uintptr_t info_gain, std::uintptr_t info_gain_norm, std::uintptr_t zero_ig,
                  int32_t max_fanout) {
  IGD_CHECK_ARG(max_fanout >= 0, "max_fanout must be >= 0 (0: unknown), got ", max_fanout);
  TrieView v;
  v.num_nodes = num_nodes;
  v.child_offsets = Ptr<const int32_t>(child_offsets);
  v.token = Ptr<const int32_t>(token);
  v.parent = Ptr<const int32_t>(parent);
  v.depth = Ptr<const uint16_t>(depth);
  v.entropy = Ptr<const float>(entropy);
  v.info_gain = Ptr<const float>(info_gain);
  v.info_gain_norm = Ptr<const float>(info_gain_norm);
  v.zero_ig = Ptr<const uint8_t>(zero_ig);
  v.max_fanout = max_fanout;
  return v;
}

}  // namespace

void RegisterTrie(py::module_& m) {
  // dynamic_attr: ItemTrie.native_view() stores the trie on its view (view.owner), so the arrays
  // that the raw pointers point into live as long as the view.
  py::class_<TrieView>(
      m, "TrieView", py::dynamic_attr(),
      "Raw pointers to a trie's arrays (host or device); built by igdbeam.ItemTrie.")
      .def(py::init(&MakeView), py::arg("num_nodes"), py::arg("child_offsets"), py::arg("token"),
           py::arg("parent"), py::arg("depth"), py::arg("entropy"), py::arg("info_gain"),
           py::arg("info_gain_norm"), py::arg("zero_ig"), py::arg("max_fanout") = 0)
      .def_readonly("num_nodes", &TrieView::num_nodes)
      .def_readonly("max_fanout", &TrieView::max_fanout);

  m.def("build_trie", &Build, py::arg("offsets"), py::arg("tokens"), py::arg("weights"),
        py::arg("entropy_mode"), py::arg("vocab_size"), py::arg("equal_ig_rtol"),
        "Build the CSR trie from token paths (CSR offsets + tokens); returns a dict of arrays.");
}

}  // namespace igdbeam::bindings
