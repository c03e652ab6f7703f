use super::{LengthError, check, max_f32};

/// `output = max(input, 0)`, element-wise; any shape.
pub fn relu(input: &[f32], output: &mut [f32]) -> Result<(), LengthError> {
    check("output", output.len(), input.len())?;
    for (o, &v) in output.iter_mut().zip(input) {
        *o = max_f32(v, 0.0);
    }
    Ok(())
}

/// `values = max(values, 0)`, element-wise.
pub fn relu_in_place(values: &mut [f32]) {
    for v in values {
        *v = max_f32(*v, 0.0);
    }
}

/// ReLU on 8-bit levels whose zero point is `zero`: `max(q, zero)`, the level of `max(x, 0)`.
pub fn relu_levels_in_place(levels: &mut [u8], zero: u8) {
    for q in levels {
        *q = (*q).max(zero);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_answer() {
        let mut out = [0.0; 3];
        super::relu(&[-1.0, 0.0, 2.5], &mut out).unwrap();
        assert_eq!(out, [0.0, 0.0, 2.5]);
    }
}
