//! Owns the spatial index of available drivers in one region: an R-tree over planar metres,
//! updated on every GPS ping and queried for the nearest candidates of each order.
//!
//! Most pings move a driver a few tens of metres, which usually keeps it inside the envelope of
//! the tree node that holds it; such a move rewrites the leaf in place instead of removing and
//! reinserting it (see [`DriverIndex::upsert`]). Every leaf always sits at its driver's exact
//! latest position, so queries are exact whichever way a driver got there.

use std::cell::Cell;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::hash::Hash;

use rstar::primitives::GeomWithData;
use rstar::{AABB, Envelope, RStarInsertionStrategy, RTree, RTreeParams, SelectionFunction};

use super::distance::{HaversineFrom, LatLon, LocalProjection};

/// One answer of a nearest query.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Neighbour<K> {
    pub key: K,
    pub location: LatLon,
    pub distance_m: f64,
}

/// A tree entry: the projected point, and the key with its exact location. Carrying the
/// location in the leaf saves a hash lookup (a likely cache miss) per candidate in queries:
/// 4.4 → 2.9 µs for 10 nearest of 100k drivers.
type TreeEntry<K> = GeomWithData<[f64; 2], (K, LatLon)>;

/// A rectangle in planar metres: where a leaf may move without leaving any node envelope
/// met on the way down to it.
#[derive(Clone, Copy, Debug)]
struct Room {
    lower: [f64; 2],
    upper: [f64; 2],
}

impl Room {
    fn everywhere() -> Room {
        Room {
            lower: [f64::NEG_INFINITY; 2],
            upper: [f64::INFINITY; 2],
        }
    }

    fn narrowed_to(self, envelope: &AABB<[f64; 2]>) -> Room {
        let (lower, upper) = (envelope.lower(), envelope.upper());
        Room {
            lower: [self.lower[0].max(lower[0]), self.lower[1].max(lower[1])],
            upper: [self.upper[0].min(upper[0]), self.upper[1].min(upper[1])],
        }
    }

    fn contains(&self, xy: [f64; 2]) -> bool {
        (self.lower[0]..=self.upper[0]).contains(&xy[0])
            && (self.lower[1]..=self.upper[1]).contains(&xy[1])
    }
}

/// Finds `key`'s leaf at its indexed point `xy`, narrowing `room` to every node envelope it
/// descends into. The leaf's ancestors are all among those (a node is unpacked only when its
/// envelope holds `xy`, and the leaf is reached only through its ancestors), so a point inside
/// `room` is inside every ancestor's envelope. Other nodes unpacked on the way only make
/// `room` smaller, never wrong.
struct LocateForMove<'a, K> {
    xy: [f64; 2],
    key: K,
    room: &'a Cell<Room>,
}

impl<K: Copy + Eq> SelectionFunction<TreeEntry<K>> for LocateForMove<'_, K> {
    fn should_unpack_parent(&self, envelope: &AABB<[f64; 2]>) -> bool {
        if !envelope.contains_point(&self.xy) {
            return false;
        }
        self.room.set(self.room.get().narrowed_to(envelope));
        true
    }

    fn should_unpack_leaf(&self, leaf: &TreeEntry<K>) -> bool {
        *leaf.geom() == self.xy && leaf.data.0 == self.key
    }
}

/// Moves `key`'s leaf from `old_xy` to `xy` without restructuring the tree, when `xy` lies
/// inside the envelope of every node above the leaf: those envelopes then still bound their
/// subtrees (merely less tightly), so every query and later removal stays exact. Returns
/// false, changing nothing, when the leaf would leave them (or is not found).
fn move_in_place<K: Copy + Eq>(
    tree: &mut RTree<TreeEntry<K>, IndexParams>,
    key: K,
    old_xy: [f64; 2],
    xy: [f64; 2],
    p: LatLon,
) -> bool {
    let room = Cell::new(Room::everywhere());
    let locate = LocateForMove {
        xy: old_xy,
        key,
        room: &room,
    };
    let Some(leaf) = tree.locate_with_selection_function_mut(locate).next() else {
        return false;
    };
    if !room.get().contains(xy) {
        return false;
    }
    *leaf = GeomWithData::new(xy, (key, p));
    true
}

/// R-tree node sizes. Larger nodes than rstar's default (3..=6) make the tree shallower, so a
/// nearest query pops fewer nodes off its heap: measured at 100k drivers over the demo city,
/// queries ~10 % faster (2.5 vs 2.8 µs) with moves unchanged (~0.3 µs, in-process loop).
/// Going further (8..=24, 10..=32) made both slower again.
#[derive(Clone, Copy, Debug)]
struct IndexParams;

impl RTreeParams for IndexParams {
    const MIN_SIZE: usize = 6;
    const MAX_SIZE: usize = 16;
    const REINSERTION_COUNT: usize = 4;
    type DefaultInsertionStrategy = RStarInsertionStrategy;
}

/// The available drivers of one region, keyed by `K` (a driver id), in the region's planar
/// projection so that tree distances are cheap Euclidean ones.
#[derive(Clone)]
pub struct DriverIndex<K: Copy + Eq + Hash> {
    tree: RTree<TreeEntry<K>, IndexParams>,
    /// Each key's tree entry (projected point and exact location), so a move or removal can
    /// find the old entry through its envelope in O(log n) instead of scanning the tree.
    positions: HashMap<K, ([f64; 2], LatLon), foldhash::fast::RandomState>,
    projection: LocalProjection,
}

impl<K: Copy + Eq + Hash> fmt::Debug for DriverIndex<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DriverIndex")
            .field("len", &self.len())
            .field("projection", &self.projection)
            .finish()
    }
}

impl<K: Copy + Eq + Hash> DriverIndex<K> {
    pub fn new(projection: LocalProjection) -> Self {
        DriverIndex {
            tree: RTree::new_with_params(),
            positions: HashMap::default(),
            projection,
        }
    }

    /// Inserts or moves `key` to `p`: O(log n).
    ///
    /// A move first walks down to the key's leaf (through the nodes whose envelopes hold its old
    /// point). When `p` lies inside every envelope met on that walk, the leaf is rewritten in
    /// place: each envelope above it still bounds its subtree, merely less tightly until a later
    /// removal below it recomputes it. Otherwise the old leaf is removed and a new one inserted.
    /// On the bench workload (100k drivers over 30 km, moves of up to ~50 m) about three moves
    /// in four stay in place, each costing under half of a remove-and-insert (p50 ~1.0–1.3 µs
    /// against ~2.0–2.8 µs, benches/index_vs_redis.rs).
    ///
    /// A location that [`LatLon::is_valid`] rejects (only constructible by bypassing
    /// [`LatLon::new`]) is ignored and the previous position kept: a NaN in the tree would break
    /// its ordering for every later query.
    pub fn upsert(&mut self, key: K, p: LatLon) {
        if !p.is_valid() {
            return;
        }
        let xy = self.projection.to_xy(p);
        match self.positions.entry(key) {
            Entry::Occupied(mut slot) => {
                let (old_xy, old_p) = *slot.get();
                if old_p != p && !move_in_place(&mut self.tree, key, old_xy, xy, p) {
                    self.tree.remove(&GeomWithData::new(old_xy, (key, old_p)));
                    self.tree.insert(GeomWithData::new(xy, (key, p)));
                }
                *slot.get_mut() = (xy, p);
            }
            Entry::Vacant(slot) => {
                slot.insert((xy, p));
                self.tree.insert(GeomWithData::new(xy, (key, p)));
            }
        }
    }

    /// Removes `key`; returns whether it was present.
    pub fn remove(&mut self, key: &K) -> bool {
        match self.positions.remove(key) {
            Some((xy, p)) => {
                self.tree.remove(&GeomWithData::new(xy, (*key, p)));
                true
            }
            None => false,
        }
    }

    pub fn contains(&self, key: &K) -> bool {
        self.positions.contains_key(key)
    }

    pub fn location(&self, key: &K) -> Option<LatLon> {
        self.positions.get(key).map(|&(_, p)| p)
    }

    pub fn len(&self) -> usize {
        self.positions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    pub fn projection(&self) -> &LocalProjection {
        &self.projection
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (K, LatLon)> + '_ {
        self.positions.iter().map(|(k, &(_, p))| (*k, p))
    }

    /// Up to `k` nearest entries within `radius_m` of `p`, nearest first, skipping keys for which
    /// `skip(key)` is true (e.g. drivers that already declined this order). `distance_m` is the
    /// great-circle (haversine) distance; the search itself runs on planar distances
    /// (nearest_neighbor_iter_with_distance_2), which is why candidates are re-checked against
    /// the radius with haversine and re-sorted by it.
    ///
    /// Exact with respect to haversine: the planar walk goes out to the radius (or, once `k`
    /// answers are held, the k-th distance) widened by the projection's error bound over the
    /// tree's extent, so no entry that belongs in the answer is cut off by projection error.
    /// Every leaf holds its key's latest exact position (moves in place included, see
    /// [`DriverIndex::upsert`]), so the cutoff needs no allowance for moves.
    /// `skip` is called in planar-distance order, at most once per entry, and only for entries
    /// inside that cutoff. An invalid `p`, `k == 0` or a negative/NaN radius give no answers;
    /// an infinite radius means "the k nearest, however far".
    pub fn nearest_within(
        &self,
        p: LatLon,
        k: usize,
        radius_m: f64,
        mut skip: impl FnMut(&K) -> bool,
    ) -> Vec<Neighbour<K>> {
        let radius_ok = radius_m >= 0.0; // false for NaN too
        if k == 0 || self.is_empty() || !p.is_valid() || !radius_ok {
            return Vec::new();
        }
        let q = self.projection.to_xy(p);
        let slack = 1.0 + self.planar_error_bound(q);
        let cutoff2 = |dist_m: f64| {
            let planar_m = dist_m * slack;
            // NaN (0 × ∞ when the bound is useless near a pole) means "no cutoff".
            if planar_m.is_nan() {
                f64::INFINITY
            } else {
                planar_m * planar_m
            }
        };
        let mut limit2 = cutoff2(radius_m);
        let from_p = HaversineFrom::new(p);
        // `k` may be usize::MAX ("all"); never reserve more than could be returned.
        let mut out: Vec<Neighbour<K>> = Vec::with_capacity(k.min(self.len()).min(64));

        for (entry, d2) in self.tree.nearest_neighbor_iter_with_distance_2(&q) {
            if d2 > limit2 {
                break;
            }
            let (key, location) = entry.data;
            if skip(&key) {
                continue;
            }
            let distance_m = from_p.to(location);
            if distance_m > radius_m {
                continue;
            }
            if out.len() == k {
                if distance_m >= out[k - 1].distance_m {
                    continue;
                }
                out.pop();
            }
            let at = out.partition_point(|n| n.distance_m <= distance_m);
            out.insert(
                at,
                Neighbour {
                    key,
                    location,
                    distance_m,
                },
            );
            if out.len() == k {
                // Nothing planar-farther than this can beat the k-th answer any more.
                limit2 = limit2.min(cutoff2(out[k - 1].distance_m));
            }
        }
        out
    }

    /// Rebuilds the tree by bulk loading (after a restart): faster than n inserts.
    ///
    /// A key given twice keeps its last location; invalid locations are skipped, as in
    /// [`DriverIndex::upsert`].
    pub fn bulk_load(
        projection: LocalProjection,
        entries: impl IntoIterator<Item = (K, LatLon)>,
    ) -> Self {
        let entries = entries.into_iter();
        let mut positions =
            HashMap::with_capacity_and_hasher(entries.size_hint().0, Default::default());
        for (key, p) in entries {
            if p.is_valid() {
                positions.insert(key, (projection.to_xy(p), p));
            }
        }
        let items = positions
            .iter()
            .map(|(key, &(xy, p))| GeomWithData::new(xy, (*key, p)))
            .collect();
        DriverIndex {
            tree: RTree::bulk_load_with_params(items),
            positions,
            projection,
        }
    }

    /// Bound of |planar / haversine − 1| between `q` and any entry: both lie within the
    /// latitude band spanned by the tree's bounding box and `q`.
    fn planar_error_bound(&self, q: [f64; 2]) -> f64 {
        let envelope = self.tree.root().envelope();
        let half_extent_m = q[1]
            .abs()
            .max(envelope.lower()[1].abs())
            .max(envelope.upper()[1].abs());
        self.projection.max_relative_error(half_extent_m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::distance::haversine_m;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn ll(lat: f64, lon: f64) -> LatLon {
        LatLon::new(lat, lon).unwrap()
    }

    const CENTRE: (f64, f64) = (40.75, -73.98);

    fn projection() -> LocalProjection {
        LocalProjection::new(ll(CENTRE.0, CENTRE.1))
    }

    /// A point `north_m`, `east_m` from the centre.
    fn at(north_m: f64, east_m: f64) -> LatLon {
        projection().to_latlon([east_m, north_m])
    }

    fn keys(ns: &[Neighbour<u32>]) -> Vec<u32> {
        ns.iter().map(|n| n.key).collect()
    }

    fn small_index() -> DriverIndex<u32> {
        let mut idx = DriverIndex::new(projection());
        idx.upsert(1, at(0.0, 100.0));
        idx.upsert(2, at(0.0, -300.0));
        idx.upsert(3, at(500.0, 0.0));
        idx.upsert(4, at(-2_000.0, 0.0));
        idx.upsert(5, at(0.0, 10_000.0));
        idx
    }

    #[test]
    fn nearest_within_returns_nearest_first_with_haversine_distances() {
        let idx = small_index();
        let found = idx.nearest_within(at(0.0, 0.0), 10, 50_000.0, |_| false);
        assert_eq!(keys(&found), [1, 2, 3, 4, 5]);
        for n in &found {
            assert_eq!(n.distance_m, haversine_m(at(0.0, 0.0), n.location));
            assert_eq!(Some(n.location), idx.location(&n.key));
        }
        assert!((found[0].distance_m - 100.0).abs() < 0.5);
        assert!((found[3].distance_m - 2_000.0).abs() < 1.0);
    }

    #[test]
    fn radius_excludes_far_points() {
        let idx = small_index();
        let found = idx.nearest_within(at(0.0, 0.0), 10, 1_000.0, |_| false);
        assert_eq!(keys(&found), [1, 2, 3]);
        assert!(
            idx.nearest_within(at(0.0, 0.0), 10, 50.0, |_| false)
                .is_empty()
        );
        let exact = idx.nearest_within(at(0.0, 0.0), 10, 0.0, |_| false);
        assert!(exact.is_empty());
    }

    #[test]
    fn k_caps_results() {
        let idx = small_index();
        assert_eq!(
            keys(&idx.nearest_within(at(0.0, 0.0), 2, 50_000.0, |_| false)),
            [1, 2]
        );
        assert!(
            idx.nearest_within(at(0.0, 0.0), 0, 50_000.0, |_| false)
                .is_empty()
        );
        let all = idx.nearest_within(at(0.0, 0.0), usize::MAX, f64::INFINITY, |_| false);
        assert_eq!(keys(&all), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn skip_excludes_keys_without_using_up_k() {
        let idx = small_index();
        let mut asked = Vec::new();
        let found = idx.nearest_within(at(0.0, 0.0), 2, 50_000.0, |k| {
            asked.push(*k);
            *k == 1 || *k == 3
        });
        assert_eq!(keys(&found), [2, 4]);
        assert!(asked.contains(&1) && asked.contains(&3));
    }

    #[test]
    fn upsert_moves_and_the_old_position_is_no_longer_found() {
        let mut idx = small_index();
        idx.upsert(1, at(0.0, 20_000.0));
        assert_eq!(idx.len(), 5);
        let near = idx.nearest_within(at(0.0, 100.0), 1, 1_000.0, |_| false);
        assert_eq!(keys(&near), [2]);
        let far = idx.nearest_within(at(0.0, 20_000.0), 1, 10.0, |_| false);
        assert_eq!(keys(&far), [1]);
        assert_eq!(idx.location(&1), Some(at(0.0, 20_000.0)));
    }

    #[test]
    fn upserting_a_key_twice_keeps_one_entry() {
        let mut idx = DriverIndex::new(projection());
        idx.upsert(7, at(10.0, 10.0));
        idx.upsert(7, at(10.0, 10.0));
        idx.upsert(7, at(20.0, 20.0));
        assert_eq!(idx.len(), 1);
        let all = idx.nearest_within(at(0.0, 0.0), 10, f64::INFINITY, |_| false);
        assert_eq!(keys(&all), [7]);
        assert_eq!(idx.tree.size(), 1);
    }

    #[test]
    fn remove_reports_presence_and_drops_the_entry() {
        let mut idx = small_index();
        assert!(idx.remove(&1));
        assert!(!idx.remove(&1));
        assert!(!idx.contains(&1));
        assert_eq!(idx.location(&1), None);
        assert_eq!(idx.len(), 4);
        assert_eq!(idx.tree.size(), 4);
        let found = idx.nearest_within(at(0.0, 0.0), 1, 50_000.0, |_| false);
        assert_eq!(keys(&found), [2]);
        assert!(!idx.remove(&99));
    }

    #[test]
    fn invalid_inputs_are_ignored_not_panics() {
        let mut idx = small_index();
        idx.upsert(
            1,
            LatLon {
                lat: f64::NAN,
                lon: 0.0,
            },
        );
        idx.upsert(
            9,
            LatLon {
                lat: 0.0,
                lon: f64::INFINITY,
            },
        );
        assert_eq!(idx.location(&1), Some(at(0.0, 100.0)));
        assert!(!idx.contains(&9));
        let bad = LatLon {
            lat: f64::NAN,
            lon: f64::NAN,
        };
        assert!(idx.nearest_within(bad, 5, 1_000.0, |_| false).is_empty());
        assert!(
            idx.nearest_within(at(0.0, 0.0), 5, f64::NAN, |_| false)
                .is_empty()
        );
        assert!(
            idx.nearest_within(at(0.0, 0.0), 5, -1.0, |_| false)
                .is_empty()
        );
        let empty: DriverIndex<u32> = DriverIndex::new(projection());
        assert!(
            empty
                .nearest_within(at(0.0, 0.0), 5, 1_000.0, |_| false)
                .is_empty()
        );
        assert!(empty.is_empty());
    }

    #[test]
    fn bulk_load_equals_inserts() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut points: Vec<(u32, LatLon)> = (0..500)
            .map(|i| {
                let p = at(rng.random_range(-5e3..5e3), rng.random_range(-5e3..5e3));
                (i, p)
            })
            .collect();
        // A duplicate key: the last location wins, as with upserts.
        points.push((3, at(1.0, 1.0)));
        let mut inserted = DriverIndex::new(projection());
        for &(k, p) in &points {
            inserted.upsert(k, p);
        }
        let loaded = DriverIndex::bulk_load(projection(), points.iter().copied());
        assert_eq!(loaded.len(), inserted.len());
        assert_eq!(loaded.tree.size(), 500);
        assert_eq!(loaded.location(&3), Some(at(1.0, 1.0)));
        for (k, p) in inserted.iter() {
            assert_eq!(loaded.location(&k), Some(p));
        }
        for _ in 0..50 {
            let q = at(rng.random_range(-5e3..5e3), rng.random_range(-5e3..5e3));
            assert_eq!(
                loaded.nearest_within(q, 7, 2_000.0, |_| false),
                inserted.nearest_within(q, 7, 2_000.0, |_| false)
            );
        }
    }

    #[test]
    fn matches_brute_force_on_random_points() {
        let mut rng = StdRng::seed_from_u64(42);
        // The demo box plus its band: 18 km each way.
        let random_point =
            |rng: &mut StdRng| at(rng.random_range(-18e3..18e3), rng.random_range(-18e3..18e3));
        let mut idx = DriverIndex::new(projection());
        let mut truth: HashMap<u32, LatLon> = HashMap::new();
        for key in 0..2_000 {
            let p = random_point(&mut rng);
            idx.upsert(key, p);
            truth.insert(key, p);
        }
        // Move a quarter and remove a few, so the tree has seen churn.
        for key in (0..2_000).step_by(4) {
            let p = random_point(&mut rng);
            idx.upsert(key, p);
            truth.insert(key, p);
        }
        for key in (1..2_000).step_by(50) {
            idx.remove(&key);
            truth.remove(&key);
        }
        assert_eq!(idx.len(), truth.len());
        for i in 0..200 {
            let q = random_point(&mut rng);
            let k = 1 + i % 12;
            let radius_m = [500.0, 3_000.0, 10_000.0, f64::INFINITY][i % 4];
            let skip = |key: &u32| key.is_multiple_of(7);
            let mut expected: Vec<(f64, u32)> = truth
                .iter()
                .filter(|(key, _)| !skip(key))
                .map(|(key, p)| (haversine_m(q, *p), *key))
                .filter(|(d, _)| *d <= radius_m)
                .collect();
            expected.sort_by(|a, b| a.0.total_cmp(&b.0));
            expected.truncate(k);
            let found = idx.nearest_within(q, k, radius_m, skip);
            let found: Vec<(f64, u32)> = found.iter().map(|n| (n.distance_m, n.key)).collect();
            assert_eq!(
                found, expected,
                "query {i} at {q:?}, k {k}, radius {radius_m}"
            );
        }
    }

    /// Every node's envelope holds the envelopes of all its children, and every leaf sits at
    /// the projection of the exact location it carries: the invariants in-place moves keep.
    fn assert_tree_sound(idx: &DriverIndex<u32>) {
        fn walk(node: &rstar::ParentNode<TreeEntry<u32>>, idx: &DriverIndex<u32>) -> usize {
            let outer = node.envelope();
            let mut leaves = 0;
            for child in node.children() {
                match child {
                    rstar::RTreeNode::Leaf(leaf) => {
                        assert!(
                            outer.contains_point(leaf.geom()),
                            "{leaf:?} outside {outer:?}"
                        );
                        let (key, p) = leaf.data;
                        assert_eq!(idx.positions.get(&key), Some(&(*leaf.geom(), p)));
                        assert_eq!(*leaf.geom(), idx.projection.to_xy(p));
                        leaves += 1;
                    }
                    rstar::RTreeNode::Parent(inner) => {
                        assert!(
                            outer.contains_envelope(&inner.envelope()),
                            "{:?} outside {outer:?}",
                            inner.envelope()
                        );
                        leaves += walk(inner, idx);
                    }
                }
            }
            leaves
        }
        assert_eq!(walk(idx.tree.root(), idx), idx.len());
        assert_eq!(idx.tree.size(), idx.len());
    }

    /// Whether moving `key` to `xy` would keep its leaf in place: the same walk as
    /// [`move_in_place`], read-only.
    fn fits_in_place(idx: &DriverIndex<u32>, key: u32, xy: [f64; 2]) -> bool {
        let room = Cell::new(Room::everywhere());
        let locate = LocateForMove {
            xy: idx.positions[&key].0,
            key,
            room: &room,
        };
        let found = idx.tree.locate_with_selection_function(locate).next();
        found.is_some() && room.get().contains(xy)
    }

    /// Brute force over `truth`: the answer `nearest_within` must give.
    fn brute_force(
        truth: &HashMap<u32, LatLon>,
        q: LatLon,
        k: usize,
        radius_m: f64,
        skip: impl Fn(&u32) -> bool,
    ) -> Vec<(f64, u32)> {
        let mut expected: Vec<(f64, u32)> = truth
            .iter()
            .filter(|(key, _)| !skip(key))
            .map(|(key, p)| (haversine_m(q, *p), *key))
            .filter(|(d, _)| *d <= radius_m)
            .collect();
        expected.sort_by(|a, b| a.0.total_cmp(&b.0));
        expected.truncate(k);
        expected
    }

    #[test]
    fn moves_of_every_size_keep_answers_equal_to_brute_force() {
        let mut rng = StdRng::seed_from_u64(19);
        // 3_000 drivers in 6 km square: a tree several levels deep with leaves ~100 m across,
        // so moves of a few metres mostly stay in place and moves of tens of metres often not.
        let random_point =
            |rng: &mut StdRng| at(rng.random_range(-3e3..3e3), rng.random_range(-3e3..3e3));
        let mut idx = DriverIndex::new(projection());
        let mut truth: HashMap<u32, LatLon> = HashMap::new();
        for key in 0..3_000 {
            let p = random_point(&mut rng);
            idx.upsert(key, p);
            truth.insert(key, p);
        }
        let (mut kept, mut relocated) = (0, 0);
        for round in 0..40 {
            for _ in 0..1_000 {
                let key = rng.random_range(0..3_200);
                let Some(&old) = truth.get(&key) else {
                    // Re-adds (and first adds of keys 3_000..3_200).
                    let p = random_point(&mut rng);
                    idx.upsert(key, p);
                    truth.insert(key, p);
                    continue;
                };
                let p = match rng.random_range(0..20) {
                    0 => {
                        assert!(idx.remove(&key));
                        truth.remove(&key);
                        continue;
                    }
                    1 => random_point(&mut rng),
                    2 => old,
                    step => {
                        // Jitter of 0.1 to 100 m, half of it under 3 m.
                        let r_m = if step % 2 == 0 {
                            rng.random_range(0.1..3.0)
                        } else {
                            rng.random_range(3.0..100.0)
                        };
                        let angle = rng.random_range(0.0..std::f64::consts::TAU);
                        let [x, y] = idx.projection().to_xy(old);
                        idx.projection()
                            .to_latlon([x + r_m * angle.cos(), y + r_m * angle.sin()])
                    }
                };
                if p != old {
                    if fits_in_place(&idx, key, idx.projection().to_xy(p)) {
                        kept += 1;
                    } else {
                        relocated += 1;
                    }
                }
                idx.upsert(key, p);
                truth.insert(key, p);
            }
            assert_tree_sound(&idx);
            assert_eq!(idx.len(), truth.len());
            for i in 0..25 {
                let q = random_point(&mut rng);
                let k = 1 + (round + i) % 12;
                let radius_m = [100.0, 500.0, 3_000.0, f64::INFINITY][i % 4];
                let skip = |key: &u32| key.is_multiple_of(11);
                let found: Vec<(f64, u32)> = idx
                    .nearest_within(q, k, radius_m, skip)
                    .iter()
                    .map(|n| (n.distance_m, n.key))
                    .collect();
                assert_eq!(
                    found,
                    brute_force(&truth, q, k, radius_m, skip),
                    "round {round} query {i} at {q:?}, k {k}, radius {radius_m}"
                );
            }
        }
        // Both paths were taken, many times.
        assert!(kept > 5_000 && relocated > 5_000, "{kept} {relocated}");
    }

    #[test]
    fn a_move_inside_the_envelopes_stays_in_place_and_one_outside_relocates() {
        let mut idx = DriverIndex::new(projection());
        idx.upsert(1, at(0.0, 0.0));
        idx.upsert(2, at(1_000.0, 1_000.0));
        idx.upsert(3, at(0.0, 1_000.0));
        let root = idx.tree.root().envelope();
        // Inside the only node's envelope: the leaf moves in place; the envelope is left as it
        // was (now looser than it need be, still bounding every leaf).
        idx.upsert(1, at(500.0, 500.0));
        assert_eq!(idx.tree.root().envelope(), root);
        assert_tree_sound(&idx);
        assert_eq!(
            keys(&idx.nearest_within(at(499.0, 499.0), 1, 10.0, |_| false)),
            [1]
        );
        assert!(
            idx.nearest_within(at(0.0, 0.0), 3, 10.0, |_| false)
                .is_empty()
        );
        // Outside it: removed and inserted again, and the envelope grows to hold it.
        let far = at(20_000.0, 0.0);
        idx.upsert(1, far);
        assert_ne!(idx.tree.root().envelope(), root);
        assert!(
            idx.tree
                .root()
                .envelope()
                .contains_point(&idx.projection().to_xy(far))
        );
        assert_tree_sound(&idx);
        assert_eq!(idx.tree.size(), 3);
        assert_eq!(keys(&idx.nearest_within(far, 1, 10.0, |_| false)), [1]);
        assert!(
            idx.nearest_within(at(500.0, 500.0), 3, 10.0, |_| false)
                .is_empty()
        );
    }

    #[test]
    fn search_widens_for_projection_error_at_the_radius_edge() {
        // Far north of the projection origin the planar x-scale overstates distances: a driver
        // at haversine 2_995 m east can sit at > 3_000 m planar. It must still be found.
        let mut idx = DriverIndex::new(projection());
        let q = at(18_000.0, 0.0);
        let east = ll(q.lat, q.lon + 0.0356);
        let d = haversine_m(q, east);
        let [x, _] = idx.projection().to_xy(east);
        let planar = x - idx.projection().to_xy(q)[0];
        idx.upsert(1, east);
        let radius_m = (d + planar) / 2.0;
        assert!(d < radius_m && radius_m < planar, "{d} {planar}");
        assert_eq!(keys(&idx.nearest_within(q, 1, radius_m, |_| false)), [1]);
    }
}
