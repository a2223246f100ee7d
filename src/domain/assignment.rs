//! Batched matching: the minimum-cost assignment of orders to drivers (the Hungarian algorithm,
//! O(n²·m) per connected group). Rows are orders, columns drivers, a cost is the estimated pickup
//! time, and `None` marks a pair that cannot be matched (the driver is not among the order's
//! candidates). The most rows are assigned first; among those assignments, the cheapest total.

/// Stands in for an impossible pair: larger than any sum of real costs, so the solver only uses
/// it where no feasible column is left (and such a row is then reported unassigned).
const INFEASIBLE_COST: f64 = 1e12;

/// For each row, the column it gets, or `None`.
pub fn assign(cost: &[Vec<Option<f64>>]) -> Vec<Option<usize>> {
    let rows = cost.len();
    if rows == 0 {
        return Vec::new();
    }
    let columns = cost.iter().map(Vec::len).max().unwrap_or(0);
    let mut result = vec![None; rows];
    if columns == 0 {
        return result;
    }
    // Solve each group of rows that share columns on its own: far smaller problems.
    for (group_rows, group_columns) in components(cost, columns) {
        let matrix: Vec<Vec<f64>> = group_rows
            .iter()
            .map(|&r| {
                group_columns
                    .iter()
                    .map(|&c| cost[r].get(c).copied().flatten().unwrap_or(INFEASIBLE_COST))
                    .collect()
            })
            .collect();
        for (local_row, local_column) in solve(&matrix).into_iter().enumerate() {
            if let Some(local_column) = local_column {
                let (row, column) = (group_rows[local_row], group_columns[local_column]);
                if cost[row].get(column).copied().flatten().is_some() {
                    result[row] = Some(column);
                }
            }
        }
    }
    result
}

/// Rows and columns joined by feasible pairs, as (rows, columns) groups.
fn components(cost: &[Vec<Option<f64>>], columns: usize) -> Vec<(Vec<usize>, Vec<usize>)> {
    let rows = cost.len();
    // Union-find over rows then columns (column c is node rows + c).
    let mut parent: Vec<usize> = (0..rows + columns).collect();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for (r, row) in cost.iter().enumerate() {
        for (c, entry) in row.iter().enumerate() {
            if entry.is_some() {
                let (a, b) = (find(&mut parent, r), find(&mut parent, rows + c));
                parent[a] = b;
            }
        }
    }
    let mut groups: std::collections::BTreeMap<usize, (Vec<usize>, Vec<usize>)> =
        Default::default();
    for r in 0..rows {
        let root = find(&mut parent, r);
        groups.entry(root).or_default().0.push(r);
    }
    for c in 0..columns {
        let root = find(&mut parent, rows + c);
        if let Some(group) = groups.get_mut(&root) {
            group.1.push(c);
        }
    }
    groups
        .into_values()
        .filter(|(_, columns)| !columns.is_empty())
        .collect()
}

/// Minimum-cost assignment on a full matrix; rows may outnumber columns or the reverse.
fn solve(matrix: &[Vec<f64>]) -> Vec<Option<usize>> {
    let rows = matrix.len();
    let columns = matrix.first().map_or(0, Vec::len);
    if rows <= columns {
        hungarian(matrix).into_iter().map(Some).collect()
    } else {
        // More rows than columns: assign columns to rows, then read it back.
        let transposed: Vec<Vec<f64>> = (0..columns)
            .map(|c| (0..rows).map(|r| matrix[r][c]).collect())
            .collect();
        let mut result = vec![None; rows];
        for (column, row) in hungarian(&transposed).into_iter().enumerate() {
            result[row] = Some(column);
        }
        result
    }
}

/// The Hungarian algorithm with potentials for `n ≤ m`: the column of each row.
fn hungarian(a: &[Vec<f64>]) -> Vec<usize> {
    let n = a.len();
    let m = a[0].len();
    let mut u = vec![0.0; n + 1];
    let mut v = vec![0.0; m + 1];
    // p[j]: the row matched to column j (1-based; 0 = none); way[j]: previous column on the path.
    let mut p = vec![0usize; m + 1];
    let mut way = vec![0usize; m + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![f64::INFINITY; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = f64::INFINITY;
            let mut j1 = 0;
            for j in 1..=m {
                if !used[j] {
                    let reduced = a[i0 - 1][j - 1] - u[i0] - v[j];
                    if reduced < minv[j] {
                        minv[j] = reduced;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut column_of = vec![0; n];
    for j in 1..=m {
        if p[j] != 0 {
            column_of[p[j] - 1] = j - 1;
        }
    }
    column_of
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn full(rows: &[&[f64]]) -> Vec<Vec<Option<f64>>> {
        rows.iter()
            .map(|r| r.iter().map(|&c| Some(c)).collect())
            .collect()
    }

    fn total(cost: &[Vec<Option<f64>>], assigned: &[Option<usize>]) -> f64 {
        assigned
            .iter()
            .enumerate()
            .filter_map(|(r, c)| c.map(|c| cost[r][c].unwrap()))
            .sum()
    }

    /// Every injective assignment, by brute force: (most rows assigned, least cost).
    fn brute_force(cost: &[Vec<Option<f64>>]) -> (usize, f64) {
        fn go(
            cost: &[Vec<Option<f64>>],
            row: usize,
            used: &mut Vec<bool>,
            count: usize,
            sum: f64,
            best: &mut (usize, f64),
        ) {
            if row == cost.len() {
                if count > best.0 || (count == best.0 && sum < best.1 - 1e-9) {
                    *best = (count, sum);
                }
                return;
            }
            go(cost, row + 1, used, count, sum, best);
            for c in 0..used.len() {
                if !used[c]
                    && let Some(x) = cost[row][c]
                {
                    used[c] = true;
                    go(cost, row + 1, used, count + 1, sum + x, best);
                    used[c] = false;
                }
            }
        }
        let columns = cost.iter().map(Vec::len).max().unwrap_or(0);
        let mut best = (0, f64::INFINITY);
        go(cost, 0, &mut vec![false; columns], 0, 0.0, &mut best);
        if best.0 == 0 {
            best.1 = 0.0;
        }
        best
    }

    #[test]
    fn a_square_case_gets_its_known_optimum() {
        // Row 1 alone would take column 1 (cost 0), forcing 3 + 0 + 3 = 6; the optimum is 5.
        let cost = full(&[&[4.0, 1.0, 3.0], &[2.0, 0.0, 5.0], &[3.0, 2.0, 2.0]]);
        let assigned = assign(&cost);
        assert_eq!(assigned, vec![Some(1), Some(0), Some(2)]);
        assert_eq!(total(&cost, &assigned), 5.0);
    }

    #[test]
    fn with_more_orders_than_drivers_the_cheapest_orders_are_served() {
        let cost = full(&[&[10.0, 9.0], &[1.0, 8.0], &[7.0, 2.0]]);
        let assigned = assign(&cost);
        assert_eq!(assigned, vec![None, Some(0), Some(1)]);
    }

    #[test]
    fn with_more_drivers_than_orders_each_order_gets_the_globally_best_driver() {
        // Alone, order 0 would take driver 0 (1.0) and leave order 1 with 9.0; together 2 + 3.
        let cost = full(&[&[1.0, 2.0, 50.0], &[3.0, 9.0, 40.0]]);
        let assigned = assign(&cost);
        assert_eq!(assigned, vec![Some(1), Some(0)]);
        assert_eq!(total(&cost, &assigned), 5.0);
    }

    #[test]
    fn impossible_pairs_are_never_assigned_and_more_orders_are_preferred() {
        // Order 1 can only take driver 0; serving both beats giving driver 0 to order 0.
        let cost = vec![vec![Some(1.0), Some(5.0)], vec![Some(4.0), None]];
        let assigned = assign(&cost);
        assert_eq!(assigned, vec![Some(1), Some(0)]);
        let lonely = vec![vec![None, None], vec![Some(2.0), None]];
        assert_eq!(assign(&lonely), vec![None, Some(0)]);
        assert_eq!(assign(&[]), Vec::<Option<usize>>::new());
        assert_eq!(assign(&[vec![], vec![]]), vec![None, None]);
    }

    #[test]
    fn matches_brute_force_on_random_small_problems() {
        let mut rng = StdRng::seed_from_u64(7);
        for case in 0..400 {
            let rows = rng.random_range(1..=6);
            let columns = rng.random_range(1..=6);
            let cost: Vec<Vec<Option<f64>>> = (0..rows)
                .map(|_| {
                    (0..columns)
                        .map(|_| {
                            rng.random_bool(0.75)
                                .then(|| f64::from(rng.random_range(0..100u32)))
                        })
                        .collect()
                })
                .collect();
            let assigned = assign(&cost);
            let mut used = std::collections::HashSet::new();
            for (r, c) in assigned.iter().enumerate() {
                if let Some(c) = c {
                    assert!(cost[r][*c].is_some(), "case {case}: infeasible pair used");
                    assert!(used.insert(*c), "case {case}: driver used twice");
                }
            }
            let count = assigned.iter().filter(|c| c.is_some()).count();
            let (best_count, best_sum) = brute_force(&cost);
            assert_eq!(count, best_count, "case {case}: {cost:?}");
            assert!(
                (total(&cost, &assigned) - best_sum).abs() < 1e-6,
                "case {case}: {cost:?}"
            );
        }
    }
}
