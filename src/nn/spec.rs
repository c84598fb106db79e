//! The `--model` grammar: presets, the `linear` / `mlp:H1,H2` shorthands and layer lists such as
//! `conv:32:5,relu,maxpool:2,flatten,linear:256,relu,linear`.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// One layer as the user writes it.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerSpec {
    /// `linear:N`, or `linear` for the last layer (width = number of classes).
    Linear {
        out: Option<usize>,
    },
    Relu,
    Flatten,
    /// `conv:OUT:K[:s=STRIDE][:p=PADDING][:nobias]`.
    Conv {
        out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
    },
    /// `maxpool:K[:STRIDE][:p=PADDING]` (stride defaults to K; padded positions never win, as
    /// in `nn.MaxPool2d`, where the padding is at most K/2).
    MaxPool {
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    /// `avgpool:K[:STRIDE]`.
    AvgPool {
        kernel: usize,
        stride: usize,
    },
    /// `gap`: global average pooling to 1×1.
    GlobalAvgPool,
    /// `bn`: BatchNorm2d over the channels (PyTorch's eps 1e-5, momentum 0.1).
    BatchNorm,
    /// `dropout:P`: zero each value with probability P while training.
    Dropout {
        p: f32,
    },
    /// `res(BODY)` or `res(BODY;SHORTCUT)`: `y = body(x) + shortcut(x)` (identity when no
    /// shortcut is given).
    Residual {
        body: Vec<LayerSpec>,
        shortcut: Option<Vec<LayerSpec>>,
    },
}

impl LayerSpec {
    /// Works in place on the buffers of the layer before it.
    pub fn in_place(&self) -> bool {
        matches!(self, LayerSpec::Relu | LayerSpec::Flatten | LayerSpec::Dropout { .. })
    }
}

/// A model: layers in `nn.Sequential` order.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    pub layers: Vec<LayerSpec>,
    /// A preset whose tensors carry another library's names (`resnet18`: torchvision's); it
    /// is written by its name, so a checkpoint's metadata keeps the naming.
    pub named: Option<&'static str>,
}

/// torchvision's `resnet18` layout for 224×224 RGB images: the stem (7×7 conv, stride 2; 3×3
/// max pool, stride 2), 4 stages of 2 basic blocks (64, 128, 256, 512 channels; 1×1 conv +
/// batch norm shortcuts where the size halves), global average pooling, the classifier.
const RESNET18: &str = "conv:64:7:s=2:p=3:nobias,bn,relu,maxpool:3:2:p=1,\
     res(conv:64:3:p=1:nobias,bn,relu,conv:64:3:p=1:nobias,bn),relu,\
     res(conv:64:3:p=1:nobias,bn,relu,conv:64:3:p=1:nobias,bn),relu,\
     res(conv:128:3:s=2:p=1:nobias,bn,relu,conv:128:3:p=1:nobias,bn;conv:128:1:s=2:nobias,bn),relu,\
     res(conv:128:3:p=1:nobias,bn,relu,conv:128:3:p=1:nobias,bn),relu,\
     res(conv:256:3:s=2:p=1:nobias,bn,relu,conv:256:3:p=1:nobias,bn;conv:256:1:s=2:nobias,bn),relu,\
     res(conv:256:3:p=1:nobias,bn,relu,conv:256:3:p=1:nobias,bn),relu,\
     res(conv:512:3:s=2:p=1:nobias,bn,relu,conv:512:3:p=1:nobias,bn;conv:512:1:s=2:nobias,bn),relu,\
     res(conv:512:3:p=1:nobias,bn,relu,conv:512:3:p=1:nobias,bn),relu,\
     gap,flatten,linear";

/// A `resnet18` tensor's torchvision name from its position-based one (`4.body.0.weight` →
/// `layer1.0.conv1.weight`, `0.weight` → `conv1.weight`, `22.bias` → `fc.bias`).
pub fn torchvision_name(positional: &str) -> String {
    let parts: Vec<&str> = positional.split('.').collect();
    let Ok(top) = parts[0].parse::<usize>() else { return positional.to_string() };
    let rest = parts[1..].join(".");
    match (top, parts.get(1).copied(), parts.get(2).copied()) {
        (0, _, _) => format!("conv1.{rest}"),
        (1, _, _) => format!("bn1.{rest}"),
        (22, _, _) => format!("fc.{rest}"),
        (4..=18, Some(branch), Some(j)) if top % 2 == 0 => {
            let block = (top - 4) / 2;
            let field = parts[3..].join(".");
            let module = match (branch, j) {
                ("body", "0") => "conv1".to_string(),
                ("body", "1") => "bn1".to_string(),
                ("body", "3") => "conv2".to_string(),
                ("body", "4") => "bn2".to_string(),
                ("shortcut", j) => format!("downsample.{j}"),
                _ => return positional.to_string(),
            };
            format!("layer{}.{}.{module}.{field}", block / 2 + 1, block % 2)
        }
        _ => positional.to_string(),
    }
}

/// `(name, layers, what it is for)`.
pub const PRESETS: &[(&str, &str, &str)] = &[
    (
        "lenet",
        "conv:32:5,relu,maxpool:2,conv:64:5,relu,maxpool:2,flatten,linear:256,relu,linear",
        "LeNet-style CNN for 28x28 grey images (MNIST, Fashion-MNIST)",
    ),
    (
        "cifar-cnn",
        "conv:32:3:p=1:nobias,bn,relu,maxpool:2,conv:64:3:p=1:nobias,bn,relu,maxpool:2,\
         conv:128:3:p=1:nobias,bn,relu,maxpool:2,flatten,dropout:0.25,linear:256,relu,linear",
        "small VGG-style CNN with batch norm for 32x32 RGB images (CIFAR-10)",
    ),
    (
        "resnet8",
        "conv:16:3:p=1:nobias,bn,relu,\
         res(conv:16:3:p=1:nobias,bn,relu,conv:16:3:p=1:nobias,bn),relu,\
         res(conv:32:3:s=2:p=1:nobias,bn,relu,conv:32:3:p=1:nobias,bn;conv:32:1:s=2:nobias,bn),relu,\
         res(conv:64:3:s=2:p=1:nobias,bn,relu,conv:64:3:p=1:nobias,bn;conv:64:1:s=2:nobias,bn),relu,\
         gap,flatten,linear",
        "ResNet for 32x32 images (He et al. 2016, CIFAR variant): 3 stages of 1 basic block, 16-32-64 channels, 78k parameters",
    ),
    (
        "resnet20",
        "conv:16:3:p=1:nobias,bn,relu,\
         res(conv:16:3:p=1:nobias,bn,relu,conv:16:3:p=1:nobias,bn),relu,\
         res(conv:16:3:p=1:nobias,bn,relu,conv:16:3:p=1:nobias,bn),relu,\
         res(conv:16:3:p=1:nobias,bn,relu,conv:16:3:p=1:nobias,bn),relu,\
         res(conv:32:3:s=2:p=1:nobias,bn,relu,conv:32:3:p=1:nobias,bn;conv:32:1:s=2:nobias,bn),relu,\
         res(conv:32:3:p=1:nobias,bn,relu,conv:32:3:p=1:nobias,bn),relu,\
         res(conv:32:3:p=1:nobias,bn,relu,conv:32:3:p=1:nobias,bn),relu,\
         res(conv:64:3:s=2:p=1:nobias,bn,relu,conv:64:3:p=1:nobias,bn;conv:64:1:s=2:nobias,bn),relu,\
         res(conv:64:3:p=1:nobias,bn,relu,conv:64:3:p=1:nobias,bn),relu,\
         res(conv:64:3:p=1:nobias,bn,relu,conv:64:3:p=1:nobias,bn),relu,\
         gap,flatten,linear",
        "ResNet-20 for 32x32 images (He et al. 2016): 3 stages of 3 basic blocks, 16-32-64 channels, 0.27M parameters",
    ),
    (
        "cifar-fast",
        "conv:32:3:p=1:nobias,bn,relu,\
         conv:64:3:p=1:nobias,bn,relu,maxpool:2,\
         res(conv:64:3:p=1:nobias,bn,relu,conv:64:3:p=1:nobias,bn,relu),\
         conv:128:3:p=1:nobias,bn,relu,maxpool:2,\
         conv:256:3:p=1:nobias,bn,relu,maxpool:2,\
         res(conv:256:3:p=1:nobias,bn,relu,conv:256:3:p=1:nobias,bn,relu),\
         gap,flatten,linear",
        "fast CIFAR net in the spirit of the DAWNBench ResNet-9 at half width: conv-bn-relu blocks, pooling, 2 residual blocks, 1.6M parameters",
    ),
];

pub const GRAMMAR: &str = "\
a preset, a shorthand or a comma-separated layer list:
  presets:    lenet, cifar-cnn, resnet8, resnet20, cifar-fast, resnet18 (torchvision's names)
  shorthands: linear            one Linear layer (softmax regression)
              mlp:H1[,H2...]    Linear(H1), ReLU, ..., Linear(classes)
  layers:     linear[:N]        fully connected, N outputs (the last one: number of classes)
              conv:OUT:K[:s=S][:p=P][:nobias]   2D convolution, K×K kernel, stride S (1), padding P (0)
              maxpool:K[:S][:p=P]   max pooling, K×K window, stride S (K), padding P (0)
              avgpool:K[:S]     average pooling
              gap               global average pooling to 1×1
              bn                batch normalization over channels (BatchNorm2d)
              dropout:P         drop values with probability P while training
              relu, flatten
              res(BODY)         residual block: BODY(x) + x (BODY: layers separated by commas)
              res(BODY;SHORT)   residual block with its own shortcut: BODY(x) + SHORT(x),
                                e.g. res(conv:32:3:s=2:p=1,bn,relu,conv:32:3:p=1,bn;conv:32:1:s=2,bn)
  example:    conv:32:5,relu,maxpool:2,conv:64:5,relu,maxpool:2,flatten,linear:256,relu,linear";

impl ModelSpec {
    pub fn linear() -> Self {
        ModelSpec { layers: vec![LayerSpec::Linear { out: None }], named: None }
    }

    /// `mlp:H1,H2,...`: Linear, ReLU, ..., Linear.
    pub fn mlp(hidden: &[usize]) -> Self {
        let mut layers = Vec::new();
        for &h in hidden {
            layers.push(LayerSpec::Linear { out: Some(h) });
            layers.push(LayerSpec::Relu);
        }
        layers.push(LayerSpec::Linear { out: None });
        ModelSpec { layers, named: None }
    }

    /// The hidden widths, if this is an MLP (Linear/ReLU pairs then a final Linear).
    fn mlp_widths(&self) -> Option<Vec<usize>> {
        let (last, body) = self.layers.split_last()?;
        if *last != (LayerSpec::Linear { out: None }) || body.len() % 2 != 0 {
            return None;
        }
        body.chunks(2)
            .map(|pair| match pair {
                [LayerSpec::Linear { out: Some(h) }, LayerSpec::Relu] => Some(*h),
                _ => None,
            })
            .collect()
    }
}

impl fmt::Display for LayerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerSpec::Linear { out: Some(n) } => write!(f, "linear:{n}"),
            LayerSpec::Linear { out: None } => write!(f, "linear"),
            LayerSpec::Relu => write!(f, "relu"),
            LayerSpec::Flatten => write!(f, "flatten"),
            LayerSpec::Conv { out, kernel, stride, padding, bias } => {
                write!(f, "conv:{out}:{kernel}")?;
                if *stride != 1 {
                    write!(f, ":s={stride}")?;
                }
                if *padding != 0 {
                    write!(f, ":p={padding}")?;
                }
                if !bias {
                    write!(f, ":nobias")?;
                }
                Ok(())
            }
            LayerSpec::MaxPool { kernel, stride, padding } => {
                write!(f, "maxpool:{kernel}")?;
                if kernel != stride {
                    write!(f, ":{stride}")?;
                }
                if *padding != 0 {
                    write!(f, ":p={padding}")?;
                }
                Ok(())
            }
            LayerSpec::AvgPool { kernel, stride } if kernel == stride => {
                write!(f, "avgpool:{kernel}")
            }
            LayerSpec::AvgPool { kernel, stride } => write!(f, "avgpool:{kernel}:{stride}"),
            LayerSpec::GlobalAvgPool => write!(f, "gap"),
            LayerSpec::BatchNorm => write!(f, "bn"),
            LayerSpec::Dropout { p } => write!(f, "dropout:{p}"),
            LayerSpec::Residual { body, shortcut } => {
                write!(f, "res({}", list(body))?;
                if let Some(s) = shortcut {
                    write!(f, ";{}", list(s))?;
                }
                write!(f, ")")
            }
        }
    }
}

/// Layers as the grammar writes them: comma-separated.
fn list(layers: &[LayerSpec]) -> String {
    layers.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(",")
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = self.named {
            return write!(f, "{name}");
        }
        if let Some(hidden) = self.mlp_widths() {
            if hidden.is_empty() {
                return write!(f, "linear");
            }
            let widths: Vec<String> = hidden.iter().map(|h| h.to_string()).collect();
            return write!(f, "mlp:{}", widths.join(","));
        }
        write!(f, "{}", list(&self.layers))
    }
}

/// The deepest `res(...)` nesting a model may have.
const MAX_NESTING: i64 = 32;

/// A `--model` error: what is wrong, where (1-based item in the list), and the grammar.
fn bad(text: &str, position: Option<usize>, why: String) -> Error {
    let place = match position {
        Some(p) => format!(" at item {p} of {text:?}"),
        None => format!(" in {text:?}"),
    };
    Error::config("--model", format!("{why}{place}; expected {GRAMMAR}"))
}

fn number(text: &str, position: usize, field: &str, what: &str) -> Result<usize> {
    match field.parse::<usize>() {
        Ok(0) | Err(_) => Err(bad(
            text,
            Some(position),
            format!("{what} {field:?} is not a whole number above 0"),
        )),
        Ok(v) => Ok(v),
    }
}

/// Splits `text` at each `sep` outside parentheses; `None` when the parentheses do not match.
fn split_top(text: &str, sep: char) -> Option<Vec<&str>> {
    let (mut depth, mut start, mut out) = (0i32, 0, Vec::new());
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return None;
                }
            }
            c if c == sep && depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    (depth == 0).then_some(out)
}

/// A comma-separated layer list (a model's, or a block's body or shortcut).
fn parse_list(text: &str, list: &str, first_position: usize) -> Result<Vec<LayerSpec>> {
    let items =
        split_top(list, ',').ok_or_else(|| bad(text, None, "unbalanced parentheses".into()))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_layer(text, first_position + i, item.trim()))
        .collect()
}

fn parse_layer(text: &str, position: usize, item: &str) -> Result<LayerSpec> {
    if let Some(inner) = item.strip_prefix("res(").and_then(|r| r.strip_suffix(')')) {
        let halves = split_top(inner, ';').ok_or_else(|| {
            bad(text, Some(position), format!("unbalanced parentheses in {item:?}"))
        })?;
        let (body, shortcut) = match halves[..] {
            [body] => (body, None),
            [body, shortcut] => (body, Some(shortcut)),
            _ => {
                return Err(bad(
                    text,
                    Some(position),
                    format!(
                        "{item:?} has more than one ';'; expected res(BODY) or res(BODY;SHORTCUT)"
                    ),
                ))
            }
        };
        let parse = |list: &str, what: &str| -> Result<Vec<LayerSpec>> {
            if list.trim().is_empty() {
                return Err(bad(
                    text,
                    Some(position),
                    format!("the residual block's {what} is empty"),
                ));
            }
            parse_list(text, list, position)
        };
        return Ok(LayerSpec::Residual {
            body: parse(body, "body")?,
            shortcut: shortcut.map(|s| parse(s, "shortcut")).transpose()?,
        });
    }
    let parts: Vec<&str> = item.split(':').map(str::trim).collect();
    let args = &parts[1..];
    let want_args = |lo: usize, hi: usize| {
        if args.len() < lo || args.len() > hi {
            Err(bad(
                text,
                Some(position),
                format!("{item:?} takes {lo} to {hi} values after {:?}", parts[0]),
            ))
        } else {
            Ok(())
        }
    };
    Ok(match parts[0] {
        "linear" => {
            want_args(0, 1)?;
            LayerSpec::Linear {
                out: args.first().map(|a| number(text, position, a, "width")).transpose()?,
            }
        }
        "relu" => {
            want_args(0, 0)?;
            LayerSpec::Relu
        }
        "flatten" => {
            want_args(0, 0)?;
            LayerSpec::Flatten
        }
        "gap" => {
            want_args(0, 0)?;
            LayerSpec::GlobalAvgPool
        }
        "bn" | "batchnorm" => {
            want_args(0, 0)?;
            LayerSpec::BatchNorm
        }
        "dropout" => {
            want_args(1, 1)?;
            match args[0].parse::<f32>() {
                Ok(p) if (0.0..1.0).contains(&p) => LayerSpec::Dropout { p },
                _ => {
                    return Err(bad(
                        text,
                        Some(position),
                        format!("dropout probability {:?} is not in [0, 1)", args[0]),
                    ))
                }
            }
        }
        "maxpool" | "avgpool" => {
            // maxpool:K[:S][:p=P]; the padding only for max pooling.
            let mut args = args.to_vec();
            let mut padding = 0;
            if parts[0] == "maxpool" {
                if let Some(p) = args.last().and_then(|a| a.strip_prefix("p=")) {
                    padding = p.parse().map_err(|_| {
                        bad(text, Some(position), format!("padding {p:?} is not a whole number"))
                    })?;
                    args.pop();
                }
            }
            if args.is_empty() || args.len() > 2 {
                return Err(bad(
                    text,
                    Some(position),
                    format!("{item:?} takes a kernel and an optional stride after {:?}", parts[0]),
                ));
            }
            let kernel = number(text, position, args[0], "kernel")?;
            let stride = match args.get(1) {
                Some(s) => number(text, position, s, "stride")?,
                None => kernel,
            };
            if 2 * padding > kernel {
                return Err(bad(
                    text,
                    Some(position),
                    format!("padding {padding} is more than half the {kernel}x{kernel} window"),
                ));
            }
            if parts[0] == "maxpool" {
                LayerSpec::MaxPool { kernel, stride, padding }
            } else {
                LayerSpec::AvgPool { kernel, stride }
            }
        }
        "conv" => {
            if args.len() < 2 {
                return Err(bad(text, Some(position), format!("{item:?} needs conv:OUT:K")));
            }
            let out = number(text, position, args[0], "output channels")?;
            let kernel = number(text, position, args[1], "kernel")?;
            let (mut stride, mut padding, mut bias) = (1, 0, true);
            for opt in &args[2..] {
                if let Some(s) = opt.strip_prefix("s=") {
                    stride = number(text, position, s, "stride")?;
                } else if let Some(p) = opt.strip_prefix("p=") {
                    padding = p.parse().map_err(|_| {
                        bad(text, Some(position), format!("padding {p:?} is not a whole number"))
                    })?;
                } else if *opt == "nobias" {
                    bias = false;
                } else {
                    return Err(bad(text, Some(position), format!("unknown conv option {opt:?}")));
                }
            }
            LayerSpec::Conv { out, kernel, stride, padding, bias }
        }
        other => return Err(bad(text, Some(position), format!("unknown layer {other:?}"))),
    })
}

impl FromStr for ModelSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let text = s.trim();
        if let Some((_, layers, _)) = PRESETS.iter().find(|(name, _, _)| *name == text) {
            return layers.parse();
        }
        if text == "resnet18" {
            return Ok(ModelSpec { named: Some("resnet18"), ..RESNET18.parse()? });
        }
        if text == "linear" {
            return Ok(ModelSpec::linear());
        }
        if let Some(widths) = text.strip_prefix("mlp:") {
            let hidden = widths
                .split(',')
                .enumerate()
                .map(|(i, w)| number(text, i + 1, w.trim(), "hidden width"))
                .collect::<Result<Vec<_>>>()?;
            return Ok(ModelSpec::mlp(&hidden));
        }
        if text.is_empty() {
            return Err(bad(text, None, "empty model".into()));
        }
        // Blocks parse recursively: a bound keeps a pathological string (a config file, say)
        // from overflowing the stack.
        let deepest = text
            .chars()
            .scan(0i64, |depth, c| {
                *depth += (c == '(') as i64 - (c == ')') as i64;
                Some(*depth)
            })
            .max()
            .unwrap_or(0);
        if deepest > MAX_NESTING {
            // Not `bad`: it would echo the whole (pathological) text back.
            let why =
                format!("blocks are nested {deepest} deep; at most {MAX_NESTING} are allowed");
            return Err(Error::config("--model", format!("{why}; expected {GRAMMAR}")));
        }
        let layers = parse_list(text, text, 1)?;
        if !matches!(layers.last(), Some(LayerSpec::Linear { .. })) {
            return Err(bad(
                text,
                Some(layers.len()),
                "the last layer must be linear (it gives the class scores)".into(),
            ));
        }
        if let Some(i) =
            layers[..layers.len() - 1].iter().position(|l| *l == LayerSpec::Linear { out: None })
        {
            return Err(bad(
                text,
                Some(i + 1),
                "only the last linear may leave out its width".into(),
            ));
        }
        Ok(ModelSpec { layers, named: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorthands_presets_and_lists_round_trip() {
        for s in [
            "linear",
            "mlp:256",
            "mlp:512,128",
            "conv:32:5,relu,maxpool:2,flatten,linear:10,relu,linear",
            "conv:8:3:s=2:p=1:nobias,avgpool:2:1,gap,flatten,linear",
            "conv:4:3,maxpool:3:2:p=1,maxpool:2:p=1,flatten,linear",
            "conv:8:3:p=1,res(conv:8:3:p=1,bn,relu,conv:8:3:p=1,bn),relu,gap,flatten,linear",
            "res(conv:8:3:s=2:p=1,bn;conv:8:1:s=2,bn),flatten,linear",
            "res(conv:4:1,res(conv:4:1;conv:4:1)),flatten,linear",
        ] {
            let spec: ModelSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
            assert_eq!(spec.to_string().parse::<ModelSpec>().unwrap(), spec);
        }
        assert_eq!(
            "mlp:256".parse::<ModelSpec>().unwrap(),
            "linear:256,relu,linear".parse().unwrap()
        );
        let lenet: ModelSpec = "lenet".parse().unwrap();
        assert_eq!(lenet.layers.len(), 10);
    }

    #[test]
    fn typos_show_the_position_and_the_grammar() {
        let err = "conv:32:5,relu,maxpoool:2,flatten,linear"
            .parse::<ModelSpec>()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--model")
                && err.contains("item 3")
                && err.contains("maxpoool")
                && err.contains("presets"),
            "{err}"
        );
        for bad in [
            "",
            "mlp:",
            "mlp:0",
            "mlp:25x6",
            "cnn",
            "conv:32",
            "conv:32:5:q=1,linear",
            "linear,relu",
            "linear,linear:3",
            "maxpool:0,linear",
            "maxpool:2:p=2,linear",
            "maxpool:3:1:1:p=1,linear",
            "res(),linear",
            "res(conv:4:1;),linear",
            "res(conv:4:1;conv:4:1;conv:4:1),linear",
            "res(conv:4:1,linear",
            "res(conv:4:1)),linear",
            "res(conv:4:1,relu;bogus),linear",
        ] {
            let err = bad.parse::<ModelSpec>().unwrap_err().to_string();
            assert!(err.contains("--model"), "{bad}: {err}");
        }
    }
}
