//! Reads an OpenStreetMap extract (`.osm.pbf`) into the gazetteer and the street map.
//!
//! One pass over the file: every node's position is kept (a city's worth fits easily), the ways
//! that matter are kept with their node ids and resolved after the pass (so the order of the
//! file does not matter). What is read:
//! - addresses: nodes and ways with `addr:street` + `addr:housenumber` (a way at the mean of
//!   its nodes), their city the `addr:city` when tagged, else the extract's most common one;
//! - streets: ways whose `highway` class is drawn ([`streets::class_rank`]: motorway down to
//!   residential, living streets, service roads, pedestrian streets, footways, cycleways, paths,
//!   steps and tracks) go to the street map; the named ones are also gazetteer streets, one
//!   entry per way at the middle of its length;
//! - places: named nodes and ways tagged `place`, `amenity`, `shop` or `tourism`.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use osmpbf::{Element, ElementReader};

use super::geocoder::{Entry, Gazetteer};
use super::streets::{self, Street, StreetMap};
use crate::geo::{LatLon, haversine_m};

/// A city's map, read once at start.
#[derive(Debug)]
pub struct OfflineMap {
    pub gazetteer: Gazetteer,
    pub streets: StreetMap,
    /// South-west and north-east corners of what was read.
    pub bounds: (LatLon, LatLon),
}

/// The tags of one node or way that the map uses.
#[derive(Debug, Default)]
struct Tags {
    street: Option<String>,
    housenumber: Option<String>,
    city: Option<String>,
    name: Option<String>,
    highway: Option<String>,
    /// Tagged `place`, `amenity`, `shop` or `tourism`.
    is_place: bool,
}

impl Tags {
    fn read<'a>(tags: impl Iterator<Item = (&'a str, &'a str)>) -> Tags {
        let mut read = Tags::default();
        for (key, value) in tags {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            match key {
                "addr:street" => read.street = Some(value.to_owned()),
                "addr:housenumber" => read.housenumber = Some(value.to_owned()),
                "addr:city" => read.city = Some(value.to_owned()),
                "name" => read.name = Some(value.to_owned()),
                "highway" => read.highway = Some(value.to_owned()),
                "place" | "amenity" | "shop" | "tourism" => read.is_place = true,
                _ => {}
            }
        }
        read
    }

    fn address(&self) -> Option<(&str, &str)> {
        Some((self.street.as_deref()?, self.housenumber.as_deref()?))
    }

    fn place_name(&self) -> Option<&str> {
        self.name.as_deref().filter(|_| self.is_place)
    }

    /// The drawn `highway` class.
    fn drawn_class(&self) -> Option<&str> {
        self.highway
            .as_deref()
            .filter(|class| streets::class_rank(class).is_some())
    }

    fn matters(&self) -> bool {
        self.address().is_some() || self.place_name().is_some() || self.drawn_class().is_some()
    }
}

/// What the pass over the file collects.
#[derive(Default)]
struct Collected {
    nodes: HashMap<i64, LatLon>,
    /// Nodes with tags that matter, and where they are.
    tagged_nodes: Vec<(Tags, LatLon)>,
    /// Ways with tags that matter, and their node ids.
    ways: Vec<(Tags, Vec<i64>)>,
    /// How many addresses name each city.
    cities: HashMap<String, usize>,
}

impl Collected {
    fn node(&mut self, id: i64, lat: f64, lon: f64, tags: Tags) {
        let Ok(at) = LatLon::new(lat, lon) else {
            return;
        };
        self.nodes.insert(id, at);
        self.count_city(&tags);
        if tags.matters() {
            self.tagged_nodes.push((tags, at));
        }
    }

    fn way(&mut self, tags: Tags, refs: Vec<i64>) {
        self.count_city(&tags);
        if tags.matters() && !refs.is_empty() {
            self.ways.push((tags, refs));
        }
    }

    fn count_city(&mut self, tags: &Tags) {
        if let (Some(city), Some(_)) = (&tags.city, tags.address()) {
            *self.cities.entry(city.clone()).or_default() += 1;
        }
    }
}

impl OfflineMap {
    /// Reads the extract at `path`.
    pub fn load(path: &Path) -> Result<OfflineMap, String> {
        let file = std::fs::File::open(path)
            .map_err(|e| format!("{}: cannot open map data: {e}", path.display()))?;
        OfflineMap::from_reader(std::io::BufReader::new(file))
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Reads an extract held in memory.
    pub fn read(bytes: &[u8]) -> Result<OfflineMap, String> {
        OfflineMap::from_reader(bytes)
    }

    /// Reads an extract from `reader`.
    pub fn from_reader<R: Read + Send>(reader: R) -> Result<OfflineMap, String> {
        let mut collected = Collected::default();
        ElementReader::new(reader)
            .for_each(|element| match element {
                Element::Node(node) => {
                    let tags = Tags::read(node.tags());
                    collected.node(node.id(), node.lat(), node.lon(), tags);
                }
                Element::DenseNode(node) => {
                    let tags = Tags::read(node.tags());
                    collected.node(node.id(), node.lat(), node.lon(), tags);
                }
                Element::Way(way) => {
                    let tags = Tags::read(way.tags());
                    if tags.matters() {
                        collected.way(tags, way.refs().collect());
                    } else {
                        collected.count_city(&tags);
                    }
                }
                Element::Relation(_) => {}
            })
            .map_err(|e| format!("cannot read map data: {e}"))?;
        OfflineMap::build(collected)
    }

    fn build(collected: Collected) -> Result<OfflineMap, String> {
        let bounds = bounds(collected.nodes.values().copied())
            .ok_or_else(|| "the map data has no nodes".to_owned())?;
        let main_city = collected
            .cities
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(city, _)| city.clone());
        let city_of = |tags: &Tags| tags.city.clone().or_else(|| main_city.clone());

        let mut entries: Vec<Entry> = Vec::new();
        let mut drawn: Vec<Street> = Vec::new();
        for (tags, at) in &collected.tagged_nodes {
            add_point_entries(&mut entries, tags, city_of(tags).as_deref(), *at);
        }
        for (tags, refs) in &collected.ways {
            let points: Vec<LatLon> = refs
                .iter()
                .filter_map(|id| collected.nodes.get(id).copied())
                .collect();
            if points.is_empty() {
                continue;
            }
            if let Some(centre) = centroid(&points) {
                add_point_entries(&mut entries, tags, city_of(tags).as_deref(), centre);
            }
            if let Some(class) = tags.drawn_class() {
                if let (Some(name), Some(middle)) = (&tags.name, middle_of(&points)) {
                    entries.push(Entry::street(name, main_city.as_deref(), middle));
                }
                drawn.push(Street::new(class, tags.name.clone(), &points));
            }
        }
        Ok(OfflineMap {
            gazetteer: Gazetteer::new(entries),
            streets: StreetMap::new(drawn),
            bounds,
        })
    }
}

/// The address and place entries of something tagged `tags` at `at`.
fn add_point_entries(entries: &mut Vec<Entry>, tags: &Tags, city: Option<&str>, at: LatLon) {
    if let Some((street, number)) = tags.address() {
        entries.push(Entry::address(street, number, city, at));
    }
    if let Some(name) = tags.place_name() {
        entries.push(Entry::place(name, at));
    }
}

/// The south-west and north-east corners around `points`; none when there are none.
fn bounds(points: impl Iterator<Item = LatLon>) -> Option<(LatLon, LatLon)> {
    points.fold(None, |acc, p| {
        let (sw, ne) = acc.unwrap_or((p, p));
        Some((
            LatLon {
                lat: sw.lat.min(p.lat),
                lon: sw.lon.min(p.lon),
            },
            LatLon {
                lat: ne.lat.max(p.lat),
                lon: ne.lon.max(p.lon),
            },
        ))
    })
}

/// The mean of a way's points (a closed way's repeated last point counted once).
fn centroid(points: &[LatLon]) -> Option<LatLon> {
    let points = match points {
        [first, rest @ .., last] if !rest.is_empty() && first == last => {
            &points[..points.len() - 1]
        }
        _ => points,
    };
    let n = points.len() as f64;
    (!points.is_empty()).then(|| LatLon {
        lat: points.iter().map(|p| p.lat).sum::<f64>() / n,
        lon: points.iter().map(|p| p.lon).sum::<f64>() / n,
    })
}

/// The point halfway along the line through `points`.
fn middle_of(points: &[LatLon]) -> Option<LatLon> {
    let lengths: Vec<f64> = points.windows(2).map(|w| haversine_m(w[0], w[1])).collect();
    let mut remaining_m = lengths.iter().sum::<f64>() / 2.0;
    for (pair, length) in points.windows(2).zip(&lengths) {
        if remaining_m <= *length && *length > 0.0 {
            let t = remaining_m / length;
            return Some(LatLon {
                lat: pair[0].lat + (pair[1].lat - pair[0].lat) * t,
                lon: pair[0].lon + (pair[1].lon - pair[0].lon) * t,
            });
        }
        remaining_m -= length;
    }
    points.first().copied()
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;

    /// Central Helsinki (OpenStreetMap contributors, ODbL), read once for every test.
    fn helsinki() -> &'static OfflineMap {
        static MAP: OnceLock<OfflineMap> = OnceLock::new();
        MAP.get_or_init(|| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/helsinki/Helsinki.osm.pbf");
            OfflineMap::load(&path).expect("the Helsinki extract reads")
        })
    }

    fn at(lat: f64, lon: f64) -> LatLon {
        LatLon::new(lat, lon).unwrap()
    }

    #[test]
    fn the_helsinki_extract_gives_addresses_streets_places_and_bounds() {
        use crate::maps::geocoder::EntryKind;
        let map = helsinki();
        let count = |kind| {
            map.gazetteer
                .entries()
                .iter()
                .filter(|e| e.kind == kind)
                .count()
        };
        assert!(
            count(EntryKind::Address) > 1_400,
            "{}",
            count(EntryKind::Address)
        );
        assert!(
            count(EntryKind::Street) > 500,
            "{}",
            count(EntryKind::Street)
        );
        assert!(
            count(EntryKind::Place) > 1_000,
            "{}",
            count(EntryKind::Place)
        );
        assert!(map.streets.len() > 2_000, "{}", map.streets.len());
        let (sw, ne) = map.bounds;
        assert!(
            (60.15..60.17).contains(&sw.lat) && (24.92..24.94).contains(&sw.lon),
            "{sw:?}"
        );
        assert!(
            (60.17..60.19).contains(&ne.lat) && (24.95..24.97).contains(&ne.lon),
            "{ne:?}"
        );
        // Addresses name the extract's city (its most common addr:city when untagged).
        let address = map
            .gazetteer
            .entries()
            .iter()
            .find(|e| e.name == "Aleksanterinkatu" && e.housenumber.as_deref() == Some("52"))
            .expect("Aleksanterinkatu 52 is in the extract");
        assert_eq!(address.city.as_deref(), Some("Helsinki"));
    }

    #[test]
    fn helsinki_addresses_are_found_as_people_type_them() {
        let gazetteer = &helsinki().gazetteer;
        let cases: &[(&str, &str)] = &[
            ("Mannerheimintie", "Mannerheimintie, Helsinki"),
            ("MANNERHEIMINTIE", "Mannerheimintie, Helsinki"),
            ("mannerh", "Mannerheimintie, Helsinki"),
            ("mannerheimintie 5", "Mannerheimintie 5, Helsinki"),
            ("mannerheimintie 5, helsinki", "Mannerheimintie 5, Helsinki"),
            ("aleksanterinkatu 52", "Aleksanterinkatu 52, Helsinki"),
            (
                "aleksanterinkatu 52 helsinki",
                "Aleksanterinkatu 52, Helsinki",
            ),
            ("aleksanterinktu", "Aleksanterinkatu, Helsinki"),
            ("aleksanterinktu 52", "Aleksanterinkatu 52, Helsinki"),
            ("pohjoisesplanadi", "Pohjoisesplanadi, Helsinki"),
            ("Pohjoisesplanadi", "Pohjoisesplanadi, Helsinki"),
            ("yrjonkatu", "Yrjönkatu, Helsinki"),
            ("lonnrotinkatu", "Lönnrotinkatu, Helsinki"),
            ("stockmann", "Stockmann"),
        ];
        for (query, expected) in cases {
            let found = gazetteer.search(query, None, 10);
            assert_eq!(
                found.first().map(|p| p.label.as_str()),
                Some(*expected),
                "query {query:?} found {found:?}"
            );
        }
        let lower = gazetteer.search("pohjoisesplanadi", None, 10);
        assert_eq!(lower, gazetteer.search("POHJOISESPLANADI", None, 10));
        assert_eq!(lower.len(), 10);
        let aleksanterinkatu = &gazetteer.search("aleksanterinkatu 52", None, 1)[0];
        let where_it_is = at(aleksanterinkatu.lat, aleksanterinkatu.lon);
        assert!(
            haversine_m(where_it_is, at(60.1687, 24.9419)) < 50.0,
            "{where_it_is:?}"
        );
    }

    #[test]
    fn a_point_in_helsinki_reverses_to_its_address() {
        let place = helsinki()
            .gazetteer
            .nearest(at(60.16868, 24.94190))
            .unwrap();
        assert_eq!(place.label, "Aleksanterinkatu 52, Helsinki");
        assert_eq!(
            helsinki().gazetteer.nearest(at(61.5, 23.8)),
            None,
            "Tampere is too far"
        );
    }

    #[test]
    fn a_box_in_helsinki_holds_mannerheimintie() {
        let streets = helsinki()
            .streets
            .within(at(60.168, 24.938), at(60.171, 24.942));
        let main = streets
            .streets
            .iter()
            .find(|s| s.name.as_deref() == Some("Mannerheimintie"))
            .expect("Mannerheimintie crosses the box");
        assert_eq!(main.class, "primary");
        assert!(streets.streets.len() > 20, "{}", streets.streets.len());
        for street in &streets.streets {
            for [lat, lon] in &street.points {
                assert_eq!((lat * 1e5).round() / 1e5, *lat);
                assert_eq!((lon * 1e5).round() / 1e5, *lon);
            }
        }
    }

    #[test]
    fn what_is_not_an_extract_is_an_error_not_a_panic() {
        assert!(OfflineMap::read(b"").is_err());
        assert!(OfflineMap::read(b"not a protocol buffer at all").is_err());
        assert!(OfflineMap::read(&[0, 0, 0, 255, 1, 2, 3]).is_err());
        let missing = OfflineMap::load(Path::new("/nonexistent/city.osm.pbf")).unwrap_err();
        assert!(missing.contains("/nonexistent/city.osm.pbf"), "{missing}");
        let bytes = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("data/helsinki/Helsinki.osm.pbf"),
        )
        .unwrap();
        assert!(
            OfflineMap::read(&bytes[..bytes.len() / 2]).is_err(),
            "a cut file"
        );
    }

    #[test]
    fn a_way_stands_at_the_mean_of_its_nodes_and_a_street_at_its_middle() {
        let square = [
            at(60.0, 24.0),
            at(60.0, 24.002),
            at(60.002, 24.002),
            at(60.002, 24.0),
            at(60.0, 24.0),
        ];
        let centre = centroid(&square).unwrap();
        assert!((centre.lat - 60.001).abs() < 1e-9 && (centre.lon - 24.001).abs() < 1e-9);
        let line = [at(60.0, 24.0), at(60.0, 24.001), at(60.0, 24.004)];
        let middle = middle_of(&line).unwrap();
        assert!((middle.lon - 24.002).abs() < 1e-6, "{middle:?}");
        assert_eq!(middle_of(&[at(60.0, 24.0)]), Some(at(60.0, 24.0)));
        assert_eq!(centroid(&[]), None);
    }
}
