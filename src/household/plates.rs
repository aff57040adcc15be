//! Licence plates as OCR reads them: normalisation, folding of the characters OCR confuses,
//! and edit distance.

/// Uppercase, separators (spaces, dashes, dots, anything not a letter or digit) removed.
pub fn normalize_plate(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_uppercase)
        .collect()
}

/// Map each group of characters OCR mistakes for one another onto one representative:
/// 0/O/D/Q, 1/I/L, 2/Z, 5/S, 8/B. Input is a normalised plate.
pub fn fold_confusions(norm: &str) -> String {
    norm.chars()
        .map(|c| match c {
            'O' | 'D' | 'Q' => '0',
            'I' | 'L' => '1',
            'Z' => '2',
            'S' => '5',
            'B' => '8',
            other => other,
        })
        .collect()
}

/// Levenshtein distance over characters. Plates are short, so the simple O(nm) table is
/// the right tool.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_folds_and_measures() {
        assert_eq!(normalize_plate(" ab-12.c d "), "AB12CD");
        assert_eq!(fold_confusions("OD0Q1IL2Z5S8B"), "0000111225588");
        assert_eq!(edit_distance("ABC123", "ABC123"), 0);
        assert_eq!(edit_distance("ABC123", "ABC12"), 1);
        assert_eq!(edit_distance("ABC123", "XBC123"), 1);
        assert_eq!(edit_distance("ABC123", "ACB123"), 2);
        assert_eq!(edit_distance("", "AB"), 2);
    }
}
