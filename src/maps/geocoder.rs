//! The address index: typed text to places, and the place nearest a point. Pure.
//!
//! Text is matched the way people type it: any case, `ä ö å` also as `a o a` (and other
//! accents as their base letter), with or without the house number and the city, small typos
//! forgiven (one edit in a word of 4–7 letters, two from 8; a swap of two neighbouring letters
//! is one edit), the last word may be unfinished (`mannerh`), and a word of six letters or more
//! also finds the compounds it ends (`esplanadi`: `Pohjoisesplanadi`, `Eteläesplanadi`).
//!
//! Everything is precomputed when the index is built: entries are grouped by their normalised
//! name; each distinct word of those names knows its groups (exact words through a hash map,
//! unfinished ones through the sorted word list, typos through the words of nearly the same
//! length, checked with an edit distance that gives up as soon as it exceeds the allowance).
//! Reverse lookups use two R-trees, one of addresses, one of streets and places.

use std::collections::HashMap;

use rstar::RTree;
use rstar::primitives::GeomWithData;
use serde::{Deserialize, Serialize};

use self::text::{allowed_edits, leading_number, normalize_number, tokens_of, within_edits};
use crate::geo::{LatLon, LocalProjection, haversine_m};

mod text;

/// One place an address search can answer with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Place {
    /// What people read: `Mannerheimintie 5, Helsinki`.
    pub label: String,
    pub lat: f64,
    pub lon: f64,
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A street and house number (`addr:street` + `addr:housenumber`).
    Address,
    /// A named street (one way of it: a street may have many entries).
    Street,
    /// A named place: a shop, a restaurant, a square, a district…
    Place,
}

/// What the index is built from: an address, a named street or a named place.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The street (`addr:street`) or the name of the street or place.
    pub name: String,
    /// `addr:housenumber`, when this is an address.
    pub housenumber: Option<String>,
    /// `addr:city` or the extract's city, when known.
    pub city: Option<String>,
    pub at: LatLon,
    pub kind: EntryKind,
}

impl Entry {
    pub fn address(street: &str, housenumber: &str, city: Option<&str>, at: LatLon) -> Entry {
        Entry {
            name: street.to_owned(),
            housenumber: Some(housenumber.to_owned()),
            city: city.map(str::to_owned),
            at,
            kind: EntryKind::Address,
        }
    }

    pub fn street(name: &str, city: Option<&str>, at: LatLon) -> Entry {
        Entry {
            name: name.to_owned(),
            housenumber: None,
            city: city.map(str::to_owned),
            at,
            kind: EntryKind::Street,
        }
    }

    pub fn place(name: &str, at: LatLon) -> Entry {
        Entry {
            name: name.to_owned(),
            housenumber: None,
            city: None,
            at,
            kind: EntryKind::Place,
        }
    }

    /// `Mannerheimintie 5, Helsinki`, `Mannerheimintie, Helsinki`, or a place's name.
    pub fn label(&self) -> String {
        let mut label = self.name.clone();
        if let Some(number) = &self.housenumber {
            label.push(' ');
            label.push_str(number);
        }
        if let (Some(city), EntryKind::Address | EntryKind::Street) = (&self.city, self.kind) {
            label.push_str(", ");
            label.push_str(city);
        }
        label
    }

    fn to_place(&self) -> Place {
        Place {
            label: self.label(),
            lat: self.at.lat,
            lon: self.at.lon,
        }
    }
}

/// Within this distance an address answers a reverse lookup before any street or place.
pub const REVERSE_ADDRESS_M: f64 = 100.0;
/// Nothing farther than this answers a reverse lookup.
pub const REVERSE_MAX_M: f64 = 1_000.0;
/// Two places of the same name closer than this are one answer (a shop mapped twice).
pub const SAME_PLACE_M: f64 = 200.0;
/// Words this long or longer also match as the end of a compound word.
pub const SUFFIX_MIN_CHARS: usize = 6;

/// Match costs: lower is better. A typed word equal to a word of the name costs nothing.
const COST_PREFIX: u32 = 10;
/// Added per letter an unfinished word still lacks, up to [`COST_PREFIX_TAIL_MAX`].
const COST_PREFIX_TAIL_MAX: u32 = 9;
/// A word that ends a compound (`esplanadi` in `Pohjoisesplanadi`).
const COST_SUFFIX: u32 = 15;
const COST_PER_EDIT: u32 = 20;
/// Per word of the name that the query does not mention.
const COST_UNTYPED_WORD: u32 = 10;

/// How an answer ranks once its name matched: the asked house number, then the other numbers
/// of the street, then the street, then places, then (no number asked) the street's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tier {
    ExactNumber,
    OtherNumber,
    Street,
    Place,
    Address,
}

/// Entries that share a normalised name.
#[derive(Debug)]
struct Group {
    /// Vocabulary ids of the name's words.
    words: Vec<u32>,
    streets: Vec<u32>,
    places: Vec<u32>,
    addresses: Vec<u32>,
    /// The street entry nearest the middle of all of the street's entries.
    central_street: Option<u32>,
}

/// One distinct word of the names.
#[derive(Debug)]
struct Word {
    text: String,
    chars: Vec<char>,
    groups: Vec<u32>,
}

type Located = GeomWithData<[f64; 2], u32>;

/// The searchable index of a city's addresses, streets and places.
#[derive(Debug)]
pub struct Gazetteer {
    entries: Vec<Entry>,
    /// Each entry's normalised house number (addresses only).
    numbers: Vec<Option<String>>,
    groups: Vec<Group>,
    /// Sorted by text, so that the words a prefix starts are one range.
    words: Vec<Word>,
    word_ids: HashMap<String, u32>,
    /// Word ids by length in characters.
    words_by_len: Vec<Vec<u32>>,
    /// The normalised words of every city name, dropped from queries that name more.
    city_words: Vec<Vec<char>>,
    projection: LocalProjection,
    addresses: RTree<Located>,
    others: RTree<Located>,
}

impl Default for Gazetteer {
    fn default() -> Gazetteer {
        Gazetteer::new(Vec::new())
    }
}

impl Gazetteer {
    pub fn new(entries: Vec<Entry>) -> Gazetteer {
        let entries: Vec<Entry> = entries.into_iter().filter(|e| e.at.is_valid()).collect();
        let numbers = entries
            .iter()
            .map(|e| e.housenumber.as_deref().map(normalize_number))
            .collect();

        let mut group_of: HashMap<String, u32> = HashMap::new();
        let mut group_words: Vec<Vec<String>> = Vec::new();
        let mut groups: Vec<Group> = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let words = tokens_of(&entry.name);
            if words.is_empty() {
                continue;
            }
            let key = words.join(" ");
            let g = *group_of.entry(key).or_insert_with(|| {
                group_words.push(words);
                groups.push(Group {
                    words: Vec::new(),
                    streets: Vec::new(),
                    places: Vec::new(),
                    addresses: Vec::new(),
                    central_street: None,
                });
                (groups.len() - 1) as u32
            });
            let group = &mut groups[g as usize];
            match entry.kind {
                EntryKind::Address if entry.housenumber.is_some() => group.addresses.push(i as u32),
                EntryKind::Address | EntryKind::Street => group.streets.push(i as u32),
                EntryKind::Place => group.places.push(i as u32),
            }
        }

        let mut texts: Vec<&String> = group_words.iter().flatten().collect();
        texts.sort();
        texts.dedup();
        let mut words: Vec<Word> = texts
            .into_iter()
            .map(|text| Word {
                text: text.clone(),
                chars: text.chars().collect(),
                groups: Vec::new(),
            })
            .collect();
        let word_ids: HashMap<String, u32> = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.text.clone(), i as u32))
            .collect();
        for (g, (group, names)) in groups.iter_mut().zip(&group_words).enumerate() {
            group.words = names.iter().map(|w| word_ids[w]).collect();
            for &w in &group.words {
                let posting = &mut words[w as usize].groups;
                if posting.last() != Some(&(g as u32)) {
                    posting.push(g as u32);
                }
            }
            group.central_street = central(&entries, &group.streets);
            group.addresses.sort_by_key(|&a| {
                let number = entries[a as usize].housenumber.as_deref().unwrap_or("");
                (leading_number(number), number.to_owned())
            });
        }
        let mut words_by_len: Vec<Vec<u32>> = Vec::new();
        for (i, word) in words.iter().enumerate() {
            let len = word.chars.len();
            if words_by_len.len() <= len {
                words_by_len.resize(len + 1, Vec::new());
            }
            words_by_len[len].push(i as u32);
        }

        let mut city_words: Vec<Vec<char>> = entries
            .iter()
            .filter_map(|e| e.city.as_deref())
            .flat_map(tokens_of)
            .map(|w| w.chars().collect())
            .collect();
        city_words.sort();
        city_words.dedup();

        let projection = LocalProjection::new(mean(&entries));
        let (mut addresses, mut others) = (Vec::new(), Vec::new());
        for (i, entry) in entries.iter().enumerate() {
            let item = GeomWithData::new(projection.to_xy(entry.at), i as u32);
            match entry.kind {
                EntryKind::Address if entry.housenumber.is_some() => addresses.push(item),
                _ => others.push(item),
            }
        }

        Gazetteer {
            entries,
            numbers,
            groups,
            words,
            word_ids,
            words_by_len,
            city_words,
            projection,
            addresses: RTree::bulk_load(addresses),
            others: RTree::bulk_load(others),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry the index holds.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Up to `limit` places for `query`, best first: the typed street with the typed number,
    /// then its other numbers nearest the typed one, then streets, then places (then, with no
    /// number typed, the street's addresses in order). A closer match of the words always
    /// ranks first; `near` breaks ties by distance.
    ///
    /// The query is read as typed first; when that matches nothing, without the words that
    /// name a city (`…, Helsinki`, or the start of it while typing); then with its words
    /// written together (`mannerheimin tie` is `mannerheimintie`).
    pub fn search(&self, query: &str, near: Option<LatLon>, limit: usize) -> Vec<Place> {
        if limit == 0 {
            return Vec::new();
        }
        for reading in self.readings(Query::parse(query)) {
            if let Some(matched) = self.matching_groups(&reading) {
                return self.rank(&reading, matched, near, limit);
            }
        }
        Vec::new()
    }

    /// The ways [`Gazetteer::search`] reads a query, in order.
    fn readings(&self, query: Query) -> Vec<Query> {
        let mut readings = vec![query];
        let typed = &readings[0];
        let last = typed.words.len().saturating_sub(1);
        let kept: Vec<Vec<char>> = typed
            .words
            .iter()
            .enumerate()
            .filter(|&(i, w)| !self.is_city_word(w, i == last && typed.last_word_unfinished))
            .map(|(_, w)| w.clone())
            .collect();
        if !kept.is_empty() && kept.len() < typed.words.len() {
            readings.push(Query {
                last_word_unfinished: typed.last_word_unfinished
                    && kept.last() == typed.words.last(),
                words: kept,
                number: typed.number.clone(),
            });
        }
        let fullest = &readings[readings.len() - 1];
        if fullest.words.len() > 1 {
            readings.push(Query {
                words: vec![fullest.words.concat()],
                number: fullest.number.clone(),
                last_word_unfinished: fullest.last_word_unfinished,
            });
        }
        readings
    }

    /// The answers for the groups `matched` by `query`, best first.
    fn rank(
        &self,
        query: &Query,
        matched: HashMap<u32, u32>,
        near: Option<LatLon>,
        limit: usize,
    ) -> Vec<Place> {
        let near = near.filter(LatLon::is_valid);
        let distance = |i: u32| near.map_or(0.0, |p| haversine_m(p, self.entries[i as usize].at));
        let asked = query.number.as_deref();
        let asked_value = asked.map(leading_number);

        // (cost, tier, gap to the asked number, distance to `near`, order on the street, id)
        let mut hits: Vec<(u32, Tier, u64, f64, usize, u32)> = Vec::new();
        for (g, cost) in matched {
            let group = &self.groups[g as usize];
            let cost = cost
                + COST_UNTYPED_WORD * group.words.len().saturating_sub(query.words.len()) as u32;
            for (order, &a) in group.addresses.iter().enumerate() {
                let number = self.numbers[a as usize].as_deref().unwrap_or("");
                let (tier, gap) = match (asked, asked_value) {
                    (Some(asked), _) if asked == number => (Tier::ExactNumber, 0),
                    (Some(_), Some(wanted)) => {
                        (Tier::OtherNumber, leading_number(number).abs_diff(wanted))
                    }
                    _ => (Tier::Address, 0),
                };
                hits.push((cost, tier, gap, distance(a), order, a));
            }
            let street = match near {
                Some(_) => group
                    .streets
                    .iter()
                    .copied()
                    .min_by(|&a, &b| distance(a).total_cmp(&distance(b))),
                None => group.central_street,
            };
            if let Some(s) = street {
                hits.push((cost, Tier::Street, 0, distance(s), 0, s));
            }
            for &p in &group.places {
                hits.push((cost, Tier::Place, 0, distance(p), 0, p));
            }
        }
        hits.sort_by(|a, b| {
            (a.0, a.1, a.2)
                .cmp(&(b.0, b.1, b.2))
                .then(a.3.total_cmp(&b.3))
                .then((a.4, a.5).cmp(&(b.4, b.5)))
        });

        let mut chosen: Vec<&Entry> = Vec::new();
        let mut labels: Vec<String> = Vec::new();
        for &(.., i) in &hits {
            let entry = &self.entries[i as usize];
            let label = entry.label();
            let repeated = chosen.iter().zip(&labels).any(|(other, other_label)| {
                *other_label == label
                    && (entry.kind != EntryKind::Place
                        || haversine_m(other.at, entry.at) < SAME_PLACE_M)
            });
            if !repeated {
                chosen.push(entry);
                labels.push(label);
                if chosen.len() == limit {
                    break;
                }
            }
        }
        chosen
            .into_iter()
            .zip(labels)
            .map(|(e, label)| Place {
                label,
                lat: e.at.lat,
                lon: e.at.lon,
            })
            .collect()
    }

    /// The address nearest to `at` when one is within [`REVERSE_ADDRESS_M`]; else the nearest
    /// street or place, or address, within [`REVERSE_MAX_M`]; else none.
    pub fn nearest(&self, at: LatLon) -> Option<Place> {
        if !at.is_valid() {
            return None;
        }
        let xy = self.projection.to_xy(at);
        let nearest_in = |tree: &RTree<Located>| {
            tree.nearest_neighbor(&xy).map(|item| {
                let entry = &self.entries[item.data as usize];
                (haversine_m(at, entry.at), entry)
            })
        };
        let address = nearest_in(&self.addresses);
        if let Some((d, entry)) = address
            && d <= REVERSE_ADDRESS_M
        {
            return Some(entry.to_place());
        }
        [nearest_in(&self.others), address]
            .into_iter()
            .flatten()
            .find(|(d, _)| *d <= REVERSE_MAX_M)
            .map(|(_, entry)| entry.to_place())
    }

    /// A word naming a city: exactly, or with one typo from six letters on (not two, so that
    /// `helsingin` in a street's name is no `helsinki`).
    /// Or, `unfinished`, the start of one (two letters or more).
    fn is_city_word(&self, word: &[char], unfinished: bool) -> bool {
        let allowed = usize::from(word.len() >= 6);
        self.city_words.iter().any(|city| {
            within_edits(word, city, allowed).is_some()
                || (unfinished && word.len() >= 2 && city.starts_with(word))
        })
    }

    /// Every group whose name has a word for each word of the query, with the summed cost;
    /// `None` when there are no words or one of them matches nothing.
    fn matching_groups(&self, query: &Query) -> Option<HashMap<u32, u32>> {
        let mut matched: Option<HashMap<u32, u32>> = None;
        for (i, word) in query.words.iter().enumerate() {
            let unfinished = query.last_word_unfinished && i + 1 == query.words.len();
            let mut best: HashMap<u32, u32> = HashMap::new();
            for (w, cost) in self.word_matches(word, unfinished) {
                for &g in &self.words[w as usize].groups {
                    let slot = best.entry(g).or_insert(cost);
                    *slot = (*slot).min(cost);
                }
            }
            matched = Some(match matched {
                None => best,
                Some(so_far) => so_far
                    .into_iter()
                    .filter_map(|(g, cost)| best.get(&g).map(|more| (g, cost + more)))
                    .collect(),
            });
            if matched.as_ref().is_some_and(HashMap::is_empty) {
                return None;
            }
        }
        matched
    }

    /// The vocabulary words `word` may mean, with their cost: itself, the words it starts
    /// (when `unfinished`), the compounds it ends, and the words within its typo allowance.
    fn word_matches(&self, word: &[char], unfinished: bool) -> Vec<(u32, u32)> {
        let text: String = word.iter().collect();
        let mut found: Vec<(u32, u32)> = Vec::new();
        if let Some(&w) = self.word_ids.get(&text) {
            found.push((w, 0));
        }
        if unfinished {
            let start = self.words.partition_point(|w| w.text < text);
            for (offset, candidate) in self.words[start..].iter().enumerate() {
                if !candidate.text.starts_with(&text) {
                    break;
                }
                let tail = (candidate.chars.len() - word.len()) as u32;
                if tail > 0 {
                    let cost = COST_PREFIX + tail.min(COST_PREFIX_TAIL_MAX);
                    found.push(((start + offset) as u32, cost));
                }
            }
        }
        if word.len() >= SUFFIX_MIN_CHARS {
            for (w, candidate) in self.words.iter().enumerate() {
                if candidate.chars.len() > word.len() && candidate.chars.ends_with(word) {
                    found.push((w as u32, COST_SUFFIX));
                }
            }
        }
        let allowed = allowed_edits(word.len());
        if allowed > 0 {
            let lengths = word.len().saturating_sub(allowed)..=word.len() + allowed;
            for len in lengths {
                for &w in self.words_by_len.get(len).map_or(&[][..], Vec::as_slice) {
                    let candidate = &self.words[w as usize].chars;
                    if let Some(edits) = within_edits(word, candidate, allowed)
                        && edits > 0
                    {
                        found.push((w, COST_PER_EDIT * edits as u32));
                    }
                }
            }
        }
        found
    }
}

/// A query taken apart: the words of the name, the house number, whether the last word may be
/// unfinished.
#[derive(Debug, PartialEq)]
struct Query {
    words: Vec<Vec<char>>,
    number: Option<String>,
    last_word_unfinished: bool,
}

impl Query {
    /// Words starting with a digit are numbers: the first is the house number (a one-letter
    /// word right after it is its letter: `5 a` is `5a`), five-digit ones are postcodes and
    /// skipped. The last word is unfinished when nothing follows it, not even a space.
    fn parse(text: &str) -> Query {
        let mut words: Vec<Vec<char>> = Vec::new();
        let mut number: Option<String> = None;
        let mut last_is_word = false;
        let mut previous_was_number = false;
        for token in tokens_of(text) {
            let chars: Vec<char> = token.chars().collect();
            let is_number = chars.first().is_some_and(char::is_ascii_digit);
            let house_letter = previous_was_number && chars.len() == 1 && !is_number;
            previous_was_number = false;
            last_is_word = false;
            if house_letter {
                if let Some(n) = number.as_mut() {
                    n.extend(chars);
                }
            } else if is_number {
                let postcode = chars.len() == 5 && chars.iter().all(char::is_ascii_digit);
                if number.is_none() && !postcode {
                    number = Some(normalize_number(&token));
                    previous_was_number = true;
                }
            } else {
                words.push(chars);
                last_is_word = true;
            }
        }
        let ends_open = text.chars().last().is_some_and(char::is_alphanumeric);
        Query {
            words,
            number,
            last_word_unfinished: last_is_word && ends_open,
        }
    }
}

/// The entry among `ids` nearest the mean of their points.
fn central(entries: &[Entry], ids: &[u32]) -> Option<u32> {
    let points: Vec<&Entry> = ids.iter().map(|&i| &entries[i as usize]).collect();
    let middle = mean_of(points.iter().map(|e| e.at))?;
    ids.iter().copied().min_by(|&a, &b| {
        haversine_m(middle, entries[a as usize].at)
            .total_cmp(&haversine_m(middle, entries[b as usize].at))
    })
}

/// The mean point of the entries, (0, 0) when there are none.
fn mean(entries: &[Entry]) -> LatLon {
    mean_of(entries.iter().map(|e| e.at)).unwrap_or(LatLon { lat: 0.0, lon: 0.0 })
}

fn mean_of(points: impl Iterator<Item = LatLon>) -> Option<LatLon> {
    let (mut lat, mut lon, mut n) = (0.0, 0.0, 0usize);
    for p in points {
        lat += p.lat;
        lon += p.lon;
        n += 1;
    }
    (n > 0).then(|| LatLon {
        lat: lat / n as f64,
        lon: lon / n as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(lat: f64, lon: f64) -> LatLon {
        LatLon::new(lat, lon).unwrap()
    }

    const HKI: Option<&str> = Some("Helsinki");

    /// A small city: two streets with numbers, two compound esplanades, a place or two, and a
    /// namesake street in another city.
    fn town() -> Gazetteer {
        Gazetteer::new(vec![
            Entry::address("Mannerheimintie", "1", HKI, at(60.1680, 24.9417)),
            Entry::address("Mannerheimintie", "3", HKI, at(60.1693, 24.9408)),
            Entry::address("Mannerheimintie", "3 B", HKI, at(60.1692, 24.9408)),
            Entry::address("Mannerheimintie", "5", HKI, at(60.1694, 24.9398)),
            Entry::address("Mannerheimintie", "9", HKI, at(60.1700, 24.9385)),
            Entry::address("Mannerheimintie", "5", Some("Espoo"), at(60.2050, 24.6550)),
            Entry::street("Mannerheimintie", HKI, at(60.1689, 24.9397)),
            Entry::street("Mannerheimintie", HKI, at(60.1720, 24.9370)),
            Entry::address("Aleksanterinkatu", "52", HKI, at(60.1687, 24.9419)),
            Entry::address("Aleksanterinkatu", "50", HKI, at(60.1687, 24.9437)),
            Entry::street("Aleksanterinkatu", HKI, at(60.1690, 24.9476)),
            Entry::street("Pohjoisesplanadi", HKI, at(60.1678, 24.9476)),
            Entry::street("Eteläesplanadi", HKI, at(60.1670, 24.9480)),
            Entry::address("Töölönkatu", "4", HKI, at(60.1760, 24.9300)),
            Entry::address("Kaivokatu", "10", HKI, at(60.1702, 24.9406)),
            Entry::address("Kaivokatu", "2", HKI, at(60.1700, 24.9438)),
            Entry::address("Kaivokatu", "1", HKI, at(60.1713, 24.9415)),
            Entry::place("Kaivokatu", at(60.1705, 24.9420)),
            Entry::street("Kaivokatu", HKI, at(60.1703, 24.9413)),
            Entry::place("Stockmann", at(60.1684, 24.9420)),
            Entry::place("Mannerheim Museum", at(60.1600, 24.9600)),
            Entry::place("Alepa", at(60.1650, 24.9400)),
            Entry::place("Alepa", at(60.1651, 24.9401)),
            Entry::place("Alepa", at(60.1750, 24.9500)),
        ])
    }

    fn labels(places: &[Place]) -> Vec<&str> {
        places.iter().map(|p| p.label.as_str()).collect()
    }

    /// The first `n` labels `query` finds in the town (no `near`).
    fn first(query: &str, n: usize) -> Vec<String> {
        town()
            .search(query, None, n)
            .into_iter()
            .map(|p| p.label)
            .collect()
    }

    #[test]
    fn typed_queries_find_what_people_mean() {
        let cases: &[(&str, &str)] = &[
            // exact street and number
            ("Mannerheimintie 5", "Mannerheimintie 5, Helsinki"),
            // any case, with the city, with punctuation
            ("MANNERHEIMINTIE 5", "Mannerheimintie 5, Helsinki"),
            ("mannerheimintie 5, helsinki", "Mannerheimintie 5, Helsinki"),
            (
                "aleksanterinkatu 52 helsinki",
                "Aleksanterinkatu 52, Helsinki",
            ),
            // the number first, a postcode skipped
            ("52 aleksanterinkatu", "Aleksanterinkatu 52, Helsinki"),
            (
                "Aleksanterinkatu 52, 00100 Helsinki",
                "Aleksanterinkatu 52, Helsinki",
            ),
            // a house letter typed apart or together
            ("mannerheimintie 3 b", "Mannerheimintie 3 B, Helsinki"),
            ("mannerheimintie 3B", "Mannerheimintie 3 B, Helsinki"),
            // without the number: the street
            ("mannerheimintie", "Mannerheimintie, Helsinki"),
            ("Pohjoisesplanadi", "Pohjoisesplanadi, Helsinki"),
            ("pohjoisesplanadi", "Pohjoisesplanadi, Helsinki"),
            // ä ö å typed as a o a, or as they are
            ("toolonkatu 4", "Töölönkatu 4, Helsinki"),
            ("TÖÖLÖNKATU 4", "Töölönkatu 4, Helsinki"),
            ("etelaesplanadi", "Eteläesplanadi, Helsinki"),
            // typos: a letter missing, a letter wrong, two letters swapped, two edits in a long word
            ("aleksanterinktu 52", "Aleksanterinkatu 52, Helsinki"),
            ("aleksanterinkaty", "Aleksanterinkatu, Helsinki"),
            ("mannerhiemintie 1", "Mannerheimintie 1, Helsinki"),
            ("alexanterinkatu", "Aleksanterinkatu, Helsinki"),
            ("stockman", "Stockmann"),
            // an unfinished last word
            ("mannerh", "Mannerheimintie, Helsinki"),
            ("aleks", "Aleksanterinkatu, Helsinki"),
            // the end of a compound, a compound typed apart
            ("esplanadi", "Pohjoisesplanadi, Helsinki"),
            ("mannerheimin tie 5", "Mannerheimintie 5, Helsinki"),
            ("pohjois esplanadi", "Pohjoisesplanadi, Helsinki"),
            // the city while it is being typed
            ("mannerheimintie 5, hel", "Mannerheimintie 5, Helsinki"),
            (
                "aleksanterinkatu 52 helsin",
                "Aleksanterinkatu 52, Helsinki",
            ),
        ];
        let town = town();
        for (query, expected) in cases {
            let found = town.search(query, None, 10);
            assert_eq!(
                found.first().map(|p| p.label.as_str()),
                Some(*expected),
                "query {query:?} found {:?}",
                labels(&found)
            );
        }
    }

    #[test]
    fn the_asked_number_comes_first_then_the_nearest_numbers_then_the_street() {
        assert_eq!(
            first("mannerheimintie 4", 7),
            vec![
                "Mannerheimintie 3, Helsinki",
                "Mannerheimintie 3 B, Helsinki",
                "Mannerheimintie 5, Helsinki",
                "Mannerheimintie 5, Espoo",
                "Mannerheimintie 1, Helsinki",
                "Mannerheimintie 9, Helsinki",
                "Mannerheimintie, Helsinki",
            ]
        );
    }

    #[test]
    fn without_a_number_the_street_comes_before_places_and_its_addresses_in_order() {
        assert_eq!(
            first("kaivokatu", 10),
            vec![
                "Kaivokatu, Helsinki",
                "Kaivokatu",
                "Kaivokatu 1, Helsinki",
                "Kaivokatu 2, Helsinki",
                "Kaivokatu 10, Helsinki",
            ]
        );
    }

    #[test]
    fn a_closer_spelling_outranks_a_looser_one() {
        // `mannerheim` is a word of the museum's name and only the start of the street's.
        assert_eq!(first("mannerheim", 1), vec!["Mannerheim Museum"]);
        assert_eq!(first("mannerheimi", 1), vec!["Mannerheimintie, Helsinki"]);
        // Finished (a space after it), it is no start of anything.
        assert_eq!(first("mannerheim ", 2), vec!["Mannerheim Museum"]);
    }

    #[test]
    fn near_breaks_ties_by_distance() {
        let town = town();
        let espoo = at(60.2050, 24.6550);
        let helsinki = at(60.1690, 24.9400);
        let from_espoo = town.search("mannerheimintie 5", Some(espoo), 2);
        assert_eq!(
            labels(&from_espoo),
            vec!["Mannerheimintie 5, Espoo", "Mannerheimintie 5, Helsinki"]
        );
        let from_helsinki = town.search("mannerheimintie 5", Some(helsinki), 1);
        assert_eq!(labels(&from_helsinki), vec!["Mannerheimintie 5, Helsinki"]);
        // The street's entry nearest to the point stands for the street.
        let street = town.search("mannerheimintie", Some(at(60.1725, 24.9365)), 1);
        assert_eq!((street[0].lat, street[0].lon), (60.1720, 24.9370));
    }

    #[test]
    fn a_place_mapped_twice_is_one_answer_but_namesakes_apart_are_two() {
        let near = at(60.1650, 24.9400);
        let found = town().search("alepa", Some(near), 10);
        assert_eq!(labels(&found), vec!["Alepa", "Alepa"]);
        assert_eq!((found[1].lat, found[1].lon), (60.1750, 24.9500));
    }

    #[test]
    fn at_most_limit_answers() {
        let town = town();
        assert_eq!(town.search("mannerheimintie", None, 3).len(), 3);
        assert_eq!(town.search("mannerheimintie", None, 100).len(), 7);
        assert!(town.search("mannerheimintie", None, 0).is_empty());
    }

    #[test]
    fn queries_without_a_matching_word_find_nothing() {
        let town = town();
        for query in [
            "",
            "   ",
            ",.-",
            "52",
            "00100",
            "nowhere street 5",
            "mannerheimintie xyzzy",
        ] {
            assert!(
                town.search(query, None, 10).is_empty(),
                "query {query:?} found something"
            );
        }
    }

    #[test]
    fn words_under_four_letters_forgive_no_typo() {
        // Four letters forgive one edit (`alpa` is `alepa` missing a letter); three, none.
        assert_eq!(first("alpa ", 1), vec!["Alepa"]);
        assert!(first("alp ", 1).is_empty());
        assert!(
            first("mannerxxxintie", 1).is_empty(),
            "three edits are too many"
        );
    }

    #[test]
    fn a_city_word_that_is_part_of_a_name_is_matched_as_one() {
        let town = Gazetteer::new(vec![
            Entry::place("Hotel Arthur", at(60.1720, 24.9440)),
            Entry::place("Hotel Helsinki", at(60.1700, 24.9400)),
            Entry::address("Mannerheimintie", "5", HKI, at(60.1694, 24.9398)),
        ]);
        assert_eq!(
            labels(&town.search("hotel helsinki", None, 5)),
            vec!["Hotel Helsinki"]
        );
        assert_eq!(
            labels(&town.search("hotel, helsinki", None, 5)),
            vec!["Hotel Helsinki"],
            "punctuation does not matter"
        );
    }

    #[test]
    fn a_city_word_is_kept_when_it_is_all_there_is() {
        let town = Gazetteer::new(vec![
            Entry::place("Helsinki", at(60.17, 24.94)),
            Entry::address("Mannerheimintie", "5", HKI, at(60.1694, 24.9398)),
        ]);
        assert_eq!(labels(&town.search("helsinki", None, 5)), vec!["Helsinki"]);
        assert_eq!(
            labels(&town.search("mannerheimintie helsinkii", None, 5)),
            vec!["Mannerheimintie 5, Helsinki"]
        );
    }

    #[test]
    fn nearest_prefers_an_address_within_100_m() {
        let town = town();
        let place = town.nearest(at(60.16935, 24.9397)).unwrap();
        assert_eq!(place.label, "Mannerheimintie 5, Helsinki");
        assert_eq!((place.lat, place.lon), (60.1694, 24.9398));
    }

    #[test]
    fn nearest_falls_back_to_a_street_or_place_then_to_nothing() {
        let town = town();
        // 200 m north of the last Mannerheimintie address, beside the street's second entry.
        let street = town.nearest(at(60.1722, 24.9372)).unwrap();
        assert_eq!(street.label, "Mannerheimintie, Helsinki");
        let museum = town.nearest(at(60.1590, 24.9610)).unwrap();
        assert_eq!(museum.label, "Mannerheim Museum");
        assert_eq!(town.nearest(at(61.0, 25.0)), None, "100 km away");
        let invalid = LatLon {
            lat: f64::NAN,
            lon: 24.9,
        };
        assert_eq!(town.nearest(invalid), None);
        assert_eq!(Gazetteer::default().nearest(at(60.17, 24.94)), None);
    }

    #[test]
    fn labels_name_the_city_of_addresses_and_streets_only() {
        assert_eq!(
            Entry::address("Mannerheimintie", "5", HKI, at(60.0, 24.0)).label(),
            "Mannerheimintie 5, Helsinki"
        );
        assert_eq!(
            Entry::address("Mannerheimintie", "5", None, at(60.0, 24.0)).label(),
            "Mannerheimintie 5"
        );
        assert_eq!(
            Entry::street("Mannerheimintie", HKI, at(60.0, 24.0)).label(),
            "Mannerheimintie, Helsinki"
        );
        assert_eq!(
            Entry::place("Stockmann", at(60.0, 24.0)).label(),
            "Stockmann"
        );
    }

    #[test]
    fn queries_are_taken_apart_into_words_a_number_and_an_open_end() {
        let parsed = Query::parse("Mannerheimintie 5 a");
        assert_eq!(
            parsed.words,
            vec!["mannerheimintie".chars().collect::<Vec<_>>()]
        );
        assert_eq!(parsed.number.as_deref(), Some("5a"));
        assert!(!parsed.last_word_unfinished);
        assert!(Query::parse("mannerh").last_word_unfinished);
        assert!(!Query::parse("mannerh ").last_word_unfinished);
        assert_eq!(
            Query::parse("12-14 yrjönkatu").number.as_deref(),
            Some("12")
        );
        assert_eq!(normalize_number("12-14"), "12-14");
        assert_eq!(normalize_number(" 3 B"), "3b");
        assert_eq!(leading_number("12b"), 12);
        assert_eq!(leading_number("b"), u64::MAX);
    }
}
