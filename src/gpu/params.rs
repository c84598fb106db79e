//! Kernel parameters as the WGSL structs lay them out: one `#[repr(C)]` struct per WGSL struct,
//! with the same fields in the same order (u32 and f32 only, so the bytes match field for
//! field). Each records which shader and struct it mirrors, and a test parses that struct out of
//! the shader and compares names and types, so the two cannot drift apart.

use bytemuck::{Pod, Zeroable};

/// Which WGSL struct a params struct mirrors: (shader file, struct name, fields as `name: type`).
pub type WgslLayout = (&'static str, &'static str, &'static [(&'static str, &'static str)]);

macro_rules! wgsl_struct {
    ($(#[$doc:meta])* $name:ident = $file:literal $wgsl:literal { $($field:ident: $ty:ident),* $(,)? }) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
        pub struct $name {
            $(pub $field: $ty,)*
        }

        impl $name {
            pub const WGSL: WgslLayout =
                ($file, $wgsl, &[$((stringify!($field), stringify!($ty)),)*]);
        }
    };
}

wgsl_struct! {
    /// `pixels_to_f32`, `add_bias(_relu)`, `relu`, `relu_backward`, `add`, `scale` (`factor`).
    Elementwise = "elementwise.wgsl" "Params" { len: u32, cols: u32, factor: f32, _pad1: u32 }
}
wgsl_struct! {
    Dropout = "elementwise.wgsl" "DropoutParams" {
        len: u32, seed: u32, threshold: u32, _pad: u32,
        scale: f32, _pad1: f32, _pad2: f32, _pad3: f32,
    }
}
wgsl_struct! {
    Normalize = "elementwise.wgsl" "NormalizeParams" {
        len: u32, channels: u32, pixels: u32, _pad: u32,
    }
}
wgsl_struct! {
    CopyRows = "elementwise.wgsl" "CopyRowsParams" {
        rows: u32, cols: u32, src_width: u32, dst_width: u32,
    }
}
wgsl_struct! {
    /// `bias_grad` and `sum_splits`.
    Reduce = "reduce.wgsl" "Params" {
        rows: u32, cols: u32, chunk: u32, accumulate: u32,
        epilogue: u32, bias_cols: u32, pixels: u32, _pad0: u32,
    }
}
wgsl_struct! {
    Loss = "loss.wgsl" "Params" {
        rows: u32, cols: u32, groups: u32, partial: u32, smoothing: f32, _pad0: u32, _pad1: u32,
        _pad2: u32,
    }
}
wgsl_struct! {
    /// Every matmul variant (shaders/matmul_common.wgsl).
    Matmul = "matmul_common.wgsl" "MatmulParams" {
        m: u32, k: u32, n: u32, k_begin: u32, k_chunk: u32, accumulate: u32, vec4_loads: u32,
        epilogue: u32, pixels: u32, _pad0: u32, _pad1: u32, _pad2: u32,
    }
}
wgsl_struct! {
    /// `to_channels_first` / `to_channels_last`.
    Layout = "conv.wgsl" "Layout" { rows: u32, pixels: u32, channels: u32, flags: u32 }
}
wgsl_struct! {
    /// Conv and pooling windows (shaders/common.wgsl), with the batch and output sizes.
    WindowParams = "common.wgsl" "Window" {
        rows: u32, channels: u32, height: u32, width: u32, kernel_h: u32, kernel_w: u32,
        stride_h: u32, stride_w: u32, pad_h: u32, pad_w: u32, out_h: u32, out_w: u32,
        col_width: u32,
    }
}
wgsl_struct! {
    BatchNorm = "batchnorm.wgsl" "Params" {
        rows: u32, channels: u32, pixels: u32, train: u32,
        eps: f32, momentum: f32, chunks: u32, mode: u32,
    }
}
wgsl_struct! {
    Sgd = "optim.wgsl" "SgdParams" {
        len: u32, nesterov: u32, first_step: u32, _pad0: u32,
        lr: f32, momentum: f32, weight_decay: f32, _pad1: f32,
    }
}
wgsl_struct! {
    Adam = "optim.wgsl" "AdamParams" {
        len: u32, decoupled: u32, _pad0: u32, _pad1: u32,
        lr: f32, beta1: f32, beta2: f32, eps: f32,
        weight_decay: f32, bias_correction1: f32, bias_correction2: f32, _pad2: f32,
    }
}
wgsl_struct! {
    Rmsprop = "optim.wgsl" "RmspropParams" {
        len: u32, _pad0: u32, _pad1: u32, _pad2: u32,
        lr: f32, alpha: f32, eps: f32, weight_decay: f32,
        momentum: f32, _pad3: f32, _pad4: f32, _pad5: f32,
    }
}

wgsl_struct! {
    Gather = "gather.wgsl" "GatherParams" {
        rows: u32, channels: u32, height: u32, width: u32,
        first: u32, held: u32, _pad0: u32, _pad1: u32,
    }
}

/// Every params struct, for the layout test.
pub const ALL: &[WgslLayout] = &[
    Elementwise::WGSL,
    Dropout::WGSL,
    Normalize::WGSL,
    CopyRows::WGSL,
    Reduce::WGSL,
    Loss::WGSL,
    Matmul::WGSL,
    Layout::WGSL,
    WindowParams::WGSL,
    BatchNorm::WGSL,
    Sgd::WGSL,
    Adam::WGSL,
    Rmsprop::WGSL,
    Gather::WGSL,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn shader(file: &str) -> &'static str {
        match file {
            "elementwise.wgsl" => include_str!("../../shaders/elementwise.wgsl"),
            "reduce.wgsl" => include_str!("../../shaders/reduce.wgsl"),
            "loss.wgsl" => include_str!("../../shaders/loss.wgsl"),
            "matmul_common.wgsl" => include_str!("../../shaders/matmul_common.wgsl"),
            "conv.wgsl" => include_str!("../../shaders/conv.wgsl"),
            "common.wgsl" => include_str!("../../shaders/common.wgsl"),
            "batchnorm.wgsl" => include_str!("../../shaders/batchnorm.wgsl"),
            "optim.wgsl" => include_str!("../../shaders/optim.wgsl"),
            "gather.wgsl" => include_str!("../../shaders/gather.wgsl"),
            other => panic!("no shader {other}"),
        }
    }

    /// `name: type` of each field of `struct name { ... }` in `source`, comments dropped.
    fn wgsl_fields(source: &str, name: &str) -> Vec<(String, String)> {
        let start = source
            .find(&format!("struct {name} {{"))
            .unwrap_or_else(|| panic!("struct {name} not found"));
        let body = &source[start..];
        let body = &body[body.find('{').unwrap() + 1..body.find('}').unwrap()];
        body.lines()
            .map(|l| l.split("//").next().unwrap().trim().trim_end_matches(','))
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, t) = l.split_once(':').expect("name: type");
                (n.trim().to_string(), t.trim().to_string())
            })
            .collect()
    }

    #[test]
    fn every_params_struct_matches_its_wgsl_struct() {
        for &(file, name, fields) in ALL {
            let want: Vec<(String, String)> =
                fields.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
            assert_eq!(wgsl_fields(shader(file), name), want, "{file}: struct {name}");
        }
    }

    #[test]
    fn the_parser_sees_a_changed_field() {
        let src = "struct P {\n    a: u32, // x\n    b: f32,\n}";
        assert_eq!(
            wgsl_fields(src, "P"),
            vec![("a".into(), "u32".into()), ("b".into(), "f32".into())]
        );
        assert_ne!(wgsl_fields(src, "P"), vec![("b".to_string(), "f32".to_string())]);
    }
}
