//! Text as the address index compares it: folded to lower case without accents, cut into
//! words, house numbers normalised, and the bounded edit distance that forgives typos. Pure.

/// Words longer than this are matched exactly or as a prefix only, never with typos.
pub const FUZZY_MAX_CHARS: usize = 48;

/// Lower case, accents and `ä ö å` folded to their base letters.
pub(super) fn fold(c: char) -> impl Iterator<Item = char> {
    c.to_lowercase().map(|c| match c {
        'ä' | 'å' | 'á' | 'à' | 'â' | 'ã' | 'æ' => 'a',
        'ö' | 'ó' | 'ò' | 'ô' | 'õ' | 'ø' => 'o',
        'é' | 'è' | 'ê' | 'ë' => 'e',
        'ü' | 'ú' | 'ù' | 'û' => 'u',
        'í' | 'ì' | 'î' | 'ï' => 'i',
        'š' => 's',
        'ž' => 'z',
        'ç' => 'c',
        'ñ' => 'n',
        other => other,
    })
}

/// The folded alphanumeric runs of `text`.
pub(super) fn tokens_of(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    for c in text.chars().flat_map(fold) {
        if c.is_alphanumeric() {
            current.push(c);
        } else if !current.is_empty() {
            tokens.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

/// A house number as typed and as mapped compare equal: folded, spaces dropped
/// (`5 A` is `5a`), ranges kept (`12-14`).
pub(super) fn normalize_number(number: &str) -> String {
    number
        .chars()
        .flat_map(fold)
        .filter(|c| c.is_alphanumeric() || *c == '-')
        .collect()
}

/// The number a house number starts with (`12b` is 12); `u64::MAX` when none, to sort last.
pub(super) fn leading_number(number: &str) -> u64 {
    let digits: String = number.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or(u64::MAX)
}

/// Typos forgiven in a word of `len` characters.
pub(super) fn allowed_edits(len: usize) -> usize {
    match len {
        0..4 => 0,
        4..8 => 1,
        8..=FUZZY_MAX_CHARS => 2,
        _ => 0,
    }
}

/// The optimal-string-alignment distance between `a` and `b` (insert, delete, substitute, or
/// swap two neighbours: one edit each) when it is at most `max`; `None` as soon as it cannot be.
pub(super) fn within_edits(a: &[char], b: &[char], max: usize) -> Option<usize> {
    const ROW: usize = FUZZY_MAX_CHARS + 3;
    if a.len().abs_diff(b.len()) > max || a.len() >= ROW || b.len() >= ROW {
        return None;
    }
    let n = b.len();
    let mut before = [0usize; ROW];
    let mut previous = [0usize; ROW];
    let mut current = [0usize; ROW];
    for (j, slot) in previous.iter_mut().enumerate().take(n + 1) {
        *slot = j;
    }
    for i in 1..=a.len() {
        current[0] = i;
        let mut row_min = i;
        for j in 1..=n {
            let substitution = previous[j - 1] + usize::from(a[i - 1] != b[j - 1]);
            let mut value = substitution.min(previous[j] + 1).min(current[j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                value = value.min(before[j - 2] + 1);
            }
            current[j] = value;
            row_min = row_min.min(value);
        }
        if row_min > max {
            return None;
        }
        before = previous;
        previous = current;
    }
    (previous[n] <= max).then_some(previous[n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_a_swap_as_one_and_gives_up_past_the_allowance() {
        let chars = |s: &str| s.chars().collect::<Vec<char>>();
        let cases: &[(&str, &str, usize, Option<usize>)] = &[
            ("katu", "katu", 1, Some(0)),
            ("katu", "kaut", 1, Some(1)),
            ("katu", "kat", 1, Some(1)),
            ("katu", "katua", 1, Some(1)),
            ("katu", "kuta", 1, None),
            ("aleksanterinkatu", "alexanterinkatu", 2, Some(2)),
            ("aleksanterinkatu", "aleksanterinktu", 2, Some(1)),
            ("abc", "xyz", 2, None),
            ("", "ab", 2, Some(2)),
        ];
        for (a, b, max, expected) in cases {
            assert_eq!(
                within_edits(&chars(a), &chars(b), *max),
                *expected,
                "{a} vs {b}"
            );
        }
        let long = "a".repeat(FUZZY_MAX_CHARS + 3);
        assert_eq!(within_edits(&chars(&long), &chars(&long), 2), None);
    }

    #[test]
    fn folding_lowers_case_and_drops_accents_and_punctuation() {
        assert_eq!(
            tokens_of("Töölönkatu 4, ÅBO-Café"),
            vec!["toolonkatu", "4", "abo", "cafe"]
        );
        assert!(tokens_of(" ,.- ").is_empty());
    }
}
