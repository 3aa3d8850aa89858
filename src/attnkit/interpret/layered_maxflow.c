/* Exact max-flow between every (input, output) pair of an attention layer graph (Dinic).
 *
 * Node (l, i) is token i after layer l, numbered l * n + i; the edge (l, j) -> (l + 1, i) has
 * integer capacity caps[l][i][j]. One residual graph serves every pair: a solve from (0, j) to
 * (L, t) never enters the other layer-L nodes (they are skipped) nor the other layer-0 nodes
 * (they have no in-edges), and afterwards only the edges it changed are restored. The first
 * phase needs no breadth-first search (a node's layer is its distance) and follows forward edges
 * only, largest capacity first; a layer L - 1 node goes straight to its edge into the sink. Each
 * solve stops as soon as the flow reaches min(out-capacity of the source, in-capacity of the
 * sink), which the first phase nearly always does on attention graphs. Built by attnkit.interpret.attention_flow with the system C compiler.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  int *start, *reverse, *adj, *to, *level, *it, *queue, *dirty, *sink_edge, *into;
  int32_t *cap, *orig;
  char *touched;
  int ndirty, nodes, last, dead, sink, first_phase;
  /* a node's edges: adj[start[v] .. reverse[v]) forward, largest capacity first, then its
   * reverse edges up to start[v + 1]. Nodes `last` .. `dead` form layer L - 1; sink_edge[k * n
   * + i] is the edge (L - 1, k) -> (L, i) (or -1), into[k] the one to the current sink. Nodes
   * from `dead` on are skipped, except `sink`. */
} Graph;

static int bfs(Graph *g, int source) {
  int head = 0, tail = 0;
  for (int v = 0; v < g->nodes; v++) g->level[v] = -1;
  g->level[source] = 0;
  g->queue[tail++] = source;
  while (head < tail) {
    int u = g->queue[head++];
    if (g->level[g->sink] >= 0 && g->level[u] >= g->level[g->sink]) break;
    for (int a = g->start[u]; a < g->start[u + 1]; a++) {
      int e = g->adj[a], v = g->to[e];
      if (g->cap[e] > 0 && g->level[v] < 0 && (v < g->dead || v == g->sink)) {
        g->level[v] = g->level[u] + 1;
        g->queue[tail++] = v;
      }
    }
  }
  return g->level[g->sink] >= 0;
}

static int64_t push(Graph *g, int e, int64_t d) {
  if (!g->touched[e >> 1]) {
    g->touched[e >> 1] = 1;
    g->dirty[g->ndirty++] = e >> 1;
  }
  g->cap[e] -= (int32_t)d;
  g->cap[e ^ 1] += (int32_t)d;
  return d;
}

static int64_t dfs(Graph *g, int u, int64_t limit) {
  if (u == g->sink) return limit;
  int64_t pushed = 0;
  if (u >= g->last && u < g->dead && g->it[u] == g->start[u]) {  /* layer L - 1: the sink */
    int e = g->into[u - g->last];
    if (e >= 0 && g->level[g->sink] == g->level[u] + 1) {
      int64_t d = limit < g->cap[e] ? limit : g->cap[e];
      if (d > 0 && (pushed = push(g, e, d)) == limit) return pushed;
    }
    g->it[u] = g->reverse[u];  /* its other forward edges lead to skipped nodes */
  }
  int end = g->first_phase ? g->reverse[u] : g->start[u + 1];  /* phase 1: forward only */
  for (; g->it[u] < end; g->it[u]++) {
    int e = g->adj[g->it[u]], v = g->to[e];
    if (g->cap[e] <= 0 || g->level[v] != g->level[u] + 1) continue;
    int64_t want = limit - pushed;
    if (want > g->cap[e]) want = g->cap[e];
    int64_t d = dfs(g, v, want);
    if (d == 0) continue;
    pushed += push(g, e, d);
    if (pushed == limit) return pushed;
  }
  g->level[u] = -1;  /* a dead end for the rest of this phase */
  return pushed;
}

static void larger_first(int *edges, int count, const int32_t *caps) {  /* Shell sort */
  for (int gap = count / 2; gap > 0; gap /= 2)
    for (int a = gap; a < count; a++) {
      int e = edges[a], b = a;
      for (; b >= gap && caps[edges[b - gap]] < caps[e]; b -= gap) edges[b] = edges[b - gap];
      edges[b] = e;
    }
}

/* caps: (L, n, n), caps[l][i][j] >= 0 the capacity of (l, j) -> (l + 1, i).
 * out: (nt, n), out[t][j] the max flow from (0, j) to (L, targets[t]). Returns 0, or -1 when
 * memory ran out. */
int attnkit_layered_maxflow(int n, int L, const int32_t *caps, int nt, const int32_t *targets,
                            int64_t *out) {
  int V = (L + 1) * n;
  long E = 0;
  for (long x = 0; x < (long)L * n * n; x++) E += caps[x] > 0;
  Graph g = {0};
  int *from = malloc(sizeof(int) * 2 * E), *fill = calloc(V + 1, sizeof(int));
  int64_t *outcap = calloc(n, sizeof(int64_t)), *incap = calloc(n, sizeof(int64_t));
  g.to = malloc(sizeof(int) * 2 * E);
  g.adj = malloc(sizeof(int) * 2 * E);
  g.cap = malloc(sizeof(int32_t) * 2 * E);
  g.orig = malloc(sizeof(int32_t) * 2 * E);
  g.dirty = malloc(sizeof(int) * (E + 1));
  g.touched = calloc(E + 1, 1);
  g.start = calloc(V + 1, sizeof(int));
  g.reverse = calloc(V, sizeof(int));
  g.sink_edge = malloc(sizeof(int) * (long)n * n);
  g.into = malloc(sizeof(int) * n);
  g.level = malloc(sizeof(int) * V);
  g.it = malloc(sizeof(int) * V);
  g.queue = malloc(sizeof(int) * V);
  int status = -1;
  if (!from || !fill || !outcap || !incap || !g.to || !g.adj || !g.cap || !g.orig || !g.dirty ||
      !g.touched || !g.start || !g.reverse || !g.sink_edge ||
      !g.into || !g.level || !g.it || !g.queue)
    goto done;
  long m = 0;  /* edge 2k runs forward, 2k + 1 is its reverse */
  for (int l = 0; l < L; l++)
    for (int i = 0; i < n; i++)
      for (int j = 0; j < n; j++) {
        int32_t c = caps[((long)l * n + i) * n + j];
        if (c <= 0) continue;
        from[m] = l * n + j, g.to[m] = (l + 1) * n + i, g.orig[m] = c;
        from[m + 1] = (l + 1) * n + i, g.to[m + 1] = l * n + j, g.orig[m + 1] = 0;
        m += 2;
        if (l == 0) outcap[j] += c;
        if (l == L - 1) incap[i] += c;
      }
  for (long e = 0; e < m; e++) g.start[from[e] + 1]++;
  for (int v = 0; v < V; v++) g.start[v + 1] += g.start[v];
  memcpy(fill, g.start, sizeof(int) * V);
  for (long e = 0; e < m; e += 2) g.adj[fill[from[e]]++] = (int)e;  /* forward edges */
  for (int v = 0; v < V; v++) {
    g.reverse[v] = fill[v];
    larger_first(g.adj + g.start[v], g.reverse[v] - g.start[v], g.orig);
  }
  for (long e = 1; e < m; e += 2) g.adj[fill[from[e]]++] = (int)e;  /* then reverse edges */
  for (long x = 0; x < (long)n * n; x++) g.sink_edge[x] = -1;
  for (long e = 0; e < m; e += 2)
    if (g.to[e] >= L * n) g.sink_edge[(long)(from[e] - (L - 1) * n) * n + g.to[e] - L * n] = (int)e;
  memcpy(g.cap, g.orig, sizeof(int32_t) * m);
  g.nodes = V;
  g.last = (L - 1) * n;
  g.dead = L * n;
  for (int t = 0; t < nt; t++) {
    g.sink = L * n + targets[t];
    for (int k = 0; k < n; k++) g.into[k] = g.sink_edge[(long)k * n + targets[t]];
    for (int j = 0; j < n; j++) {
      int64_t bound = outcap[j] < incap[targets[t]] ? outcap[j] : incap[targets[t]];
      for (int v = 0; v < V; v++) {
        g.level[v] = v < g.dead || v == g.sink ? v / n : -1;
        g.it[v] = g.start[v];
      }
      g.first_phase = 1;
      int64_t total = dfs(&g, j, bound);  /* first phase: layers are the distances */
      g.first_phase = 0;
      while (total < bound && bfs(&g, j)) {
        for (int v = 0; v < V; v++) g.it[v] = g.start[v];
        total += dfs(&g, j, bound - total);
      }
      out[(long)t * n + j] = total;
      for (int d = 0; d < g.ndirty; d++) {
        long e = 2L * g.dirty[d];
        g.cap[e] = g.orig[e];
        g.cap[e + 1] = 0;
        g.touched[g.dirty[d]] = 0;
      }
      g.ndirty = 0;
    }
  }
  status = 0;
done:
  free(from), free(fill), free(outcap), free(incap), free(g.to), free(g.adj), free(g.cap);
  free(g.orig), free(g.dirty), free(g.touched), free(g.start), free(g.level), free(g.it);
  free(g.queue), free(g.reverse), free(g.sink_edge), free(g.into);
  return status;
}
