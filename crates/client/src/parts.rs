//! Cutting a file into contiguous parts: the uploader's parallel parts and
//! the downloader's segments.

/// Where part `index` of `parts` contiguous parts of `size` bytes starts
/// (`index == parts` gives `size`).
pub(crate) fn split(size: u64, parts: usize, index: usize) -> u64 {
    let (Ok(parts), Ok(index)) = (u128::try_from(parts), u128::try_from(index)) else {
        return size;
    };
    if parts == 0 {
        return size;
    }
    // `index <= parts`, so the quotient is at most `size`.
    u64::try_from(u128::from(size) * index.min(parts) / parts).unwrap_or(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_contiguous_and_cover_the_file() {
        for (size, parts) in [(10u64, 3usize), (2, 2), (u64::MAX, 7), (64 << 20, 3)] {
            let bounds: Vec<u64> = (0..=parts).map(|i| split(size, parts, i)).collect();
            assert_eq!(bounds[0], 0);
            assert_eq!(bounds[parts], size);
            assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
        }
    }
}
