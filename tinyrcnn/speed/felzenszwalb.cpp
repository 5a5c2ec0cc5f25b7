// Felzenszwalb & Huttenlocher (IJCV 2004), "Efficient graph-based image segmentation": the
// loop over sorted edges, compiled (speed/felzenszwalb.py builds it with g++ and calls it).
//
// It takes the edges already sorted by weight, so one sort serves every k of selective search,
// and makes the very merge decisions of scikit-image's felzenszwalb (the reference), hence the
// same segments:
//   1. an edge (a, b) of weight w joins the components A and B when
//      w < min(Int(A) + k/|A|, Int(B) + k/|B|), each threshold rounded to float32 as there;
//      the joined component's Int is w (the edges come in increasing order);
//   2. then, in the same order, an edge joins any two components one of which is smaller
//      than min_size.
// Which node becomes a root does not change the components, so this union-find uses union by
// size and path halving (scikit-image keeps the smallest index as the root). Labels are then
// numbered by each component's first pixel in raster order, as scikit-image's are.
#include <cstdint>
#include <vector>

namespace {

int64_t find_root(std::vector<int64_t>& parent, int64_t i) {
  while (parent[i] != i) {
    parent[i] = parent[parent[i]];          // path halving
    i = parent[i];
  }
  return i;
}

// join the components with roots a != b; returns the root of the union
int64_t join(std::vector<int64_t>& parent, std::vector<int64_t>& size, int64_t a, int64_t b) {
  if (size[a] < size[b]) std::swap(a, b);
  parent[b] = a;
  size[a] += size[b];
  return a;
}

}  // namespace

// edges: (n_edges, 2) node pairs sorted by weight; costs: (n_edges,) their weights, increasing;
// scale: k / 255 (scikit-image's scaling of k); labels: (n_pixels,) written, 0 .. segments-1.
extern "C" void felzenszwalb_segment(long long n_pixels, long long n_edges, const long long* edges,
                                     const double* costs, double scale, long long min_size,
                                     long long* labels) {
  std::vector<int64_t> parent(n_pixels), size(n_pixels, 1);
  std::vector<double> internal(n_pixels, 0.0);              // Int(C): the largest weight inside
  for (int64_t i = 0; i < n_pixels; ++i) parent[i] = i;
  for (int64_t e = 0; e < n_edges; ++e) {
    int64_t a = find_root(parent, edges[2 * e]), b = find_root(parent, edges[2 * e + 1]);
    if (a == b) continue;
    float ta = static_cast<float>(internal[a] + scale / static_cast<double>(size[a]));
    float tb = static_cast<float>(internal[b] + scale / static_cast<double>(size[b]));
    if (costs[e] < static_cast<double>(ta < tb ? ta : tb))
      internal[join(parent, size, a, b)] = costs[e];
  }
  for (int64_t e = 0; e < n_edges; ++e) {
    int64_t a = find_root(parent, edges[2 * e]), b = find_root(parent, edges[2 * e + 1]);
    if (a != b && (size[a] < min_size || size[b] < min_size)) join(parent, size, a, b);
  }
  std::vector<int64_t> label_of(n_pixels, -1);
  int64_t next = 0;
  for (int64_t i = 0; i < n_pixels; ++i) {
    int64_t r = find_root(parent, i);
    if (label_of[r] < 0) label_of[r] = next++;
    labels[i] = label_of[r];
  }
}
