//! Building models from `--model`: PyTorch `state_dict` names and shapes, the summary, and shape
//! errors reported at build time with the layer's position.

use steepest::cpu::CpuBackend;
use steepest::nn::{Model, ModelSpec, Shape};

fn build(spec: &str, input: Shape, classes: usize) -> steepest::Result<Model<CpuBackend>> {
    Model::new(&mut CpuBackend::new(), &spec.parse::<ModelSpec>()?, input, classes, 0)
}

#[test]
fn lenet_has_pytorch_names_shapes_and_counts() {
    let model = build("lenet", Shape::new(1, 28, 28), 10).unwrap();
    let names: Vec<(String, Vec<usize>)> =
        model.params().iter().map(|p| (p.name.clone(), p.shape.clone())).collect();
    let want: Vec<(&str, Vec<usize>)> = vec![
        ("0.weight", vec![32, 1, 5, 5]),
        ("0.bias", vec![32]),
        ("3.weight", vec![64, 32, 5, 5]),
        ("3.bias", vec![64]),
        ("7.weight", vec![256, 1024]),
        ("7.bias", vec![256]),
        ("9.weight", vec![10, 256]),
        ("9.bias", vec![10]),
    ];
    assert_eq!(names, want.into_iter().map(|(n, s)| (n.to_string(), s)).collect::<Vec<_>>());
    // Conv2d(1,32,5): 832; Conv2d(32,64,5): 51,264; Linear(1024,256): 262,400; Linear(256,10): 2,570.
    assert_eq!(model.num_params(), 317_066);
    let summary = model.summary();
    assert_eq!(summary.len(), 10);
    assert_eq!(summary[2].output, Shape::new(32, 12, 12));
    assert_eq!(summary[5].output, Shape::new(64, 4, 4));
    assert_eq!(summary[6].output, Shape::flat(1024));
    assert_eq!(summary[3].params, 51_264);
}

#[test]
fn mlp_names_stay_as_before() {
    let model = build("mlp:256", Shape::new(1, 28, 28), 10).unwrap();
    let names: Vec<String> = model.params().iter().map(|p| p.name.clone()).collect();
    assert_eq!(names, ["0.weight", "0.bias", "2.weight", "2.bias"]);
    assert_eq!(model.params()[0].shape, vec![256, 784]);
}

#[test]
fn shape_errors_name_the_layer() {
    let err = |spec: &str, input: Shape| build(spec, input, 10).err().expect(spec).to_string();
    let e = err("conv:8:5,relu,conv:8:9,flatten,linear", Shape::new(1, 12, 12));
    assert!(e.contains("layer 2") && e.contains("conv:8:9") && e.contains("8x8"), "{e}");
    let e = err("conv:8:3,linear", Shape::new(1, 12, 12));
    assert!(e.contains("layer 1") && e.contains("flatten"), "{e}");
    let e = err("conv:4:3,maxpool:8,flatten,linear", Shape::new(1, 6, 6));
    assert!(e.contains("layer 1") && e.contains("maxpool:8"), "{e}");
    let e = err("flatten,linear:16,relu,linear:7", Shape::new(1, 4, 4));
    assert!(e.contains("layer 3") && e.contains("10 classes"), "{e}");
    let e = err("conv:2:3", Shape::new(1, 1, 1));
    assert!(e.contains("--model"), "{e}");
}

/// Residual blocks take the names of the PyTorch module README gives (`N.body.J`,
/// `N.shortcut.J`), in `state_dict` order; the presets have the sizes their docs say; a save
/// and load round trip restores every tensor.
#[test]
fn residual_names_presets_and_round_trip() {
    let model = build("resnet8", Shape::new(3, 32, 32), 10).unwrap();
    let mut cpu = CpuBackend::new();
    let tensors = model.export(&mut cpu).unwrap();
    let names: Vec<&str> = tensors.iter().map(|(n, _, _)| n.as_str()).collect();
    let want_prefix = [
        "0.weight",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
        "3.body.0.weight",
        "3.body.1.weight",
        "3.body.1.bias",
        "3.body.1.running_mean",
        "3.body.1.running_var",
        "3.body.1.num_batches_tracked",
        "3.body.3.weight",
        "3.body.4.weight",
    ];
    assert_eq!(&names[..want_prefix.len()], &want_prefix[..], "{names:?}");
    for n in [
        "5.body.0.weight",
        "5.shortcut.0.weight",
        "5.shortcut.1.running_var",
        "11.weight",
        "11.bias",
    ] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    let shape = |n: &str| &tensors.iter().find(|t| t.0 == n).unwrap().1;
    assert_eq!(shape("5.body.0.weight"), &vec![32, 16, 3, 3]);
    assert_eq!(shape("5.shortcut.0.weight"), &vec![32, 16, 1, 1]);
    assert_eq!(shape("11.weight"), &vec![10, 64]);
    // Option-B ResNets (1x1 conv shortcuts), counted by hand: resnet8 78,042, resnet20 272,474.
    assert_eq!(model.num_params(), 78_042);
    assert_eq!(build("resnet20", Shape::new(3, 32, 32), 10).unwrap().num_params(), 272_474);
    let fast = build("cifar-fast", Shape::new(3, 32, 32), 10).unwrap().num_params();
    assert!((1_500_000..1_800_000).contains(&fast), "cifar-fast has {fast}");

    // Each parameter's top-level layer, in state_dict order: the leading number of its name.
    let layers = model.param_layers();
    let names: Vec<String> = model.params().into_iter().map(|p| p.name).collect();
    assert_eq!(layers.len(), names.len());
    for (layer, name) in layers.iter().zip(&names) {
        assert_eq!(name.split('.').next().unwrap(), layer.to_string(), "{name}");
    }

    // Import into a model with other initial values: every tensor comes back.
    let other =
        Model::new(&mut cpu, &"resnet8".parse().unwrap(), Shape::new(3, 32, 32), 10, 99).unwrap();
    other.import(&mut cpu, &tensors, "test").unwrap();
    assert_eq!(other.export(&mut cpu).unwrap(), tensors);
}

/// A block whose paths do not meet, or that would overwrite its own input, is a clear error
/// naming the layer.
#[test]
fn residual_build_errors() {
    let input = Shape::new(3, 8, 8);
    let err = |spec: &str| build(spec, input, 2).err().expect(spec).to_string();
    let e = err("res(conv:8:3:s=2:p=1),flatten,linear");
    assert!(
        e.contains("layer 0")
            && e.contains("8x4x4")
            && e.contains("3x8x8")
            && e.contains("conv:8:1:s=2"),
        "{e}"
    );
    let e = err("conv:4:1,res(relu,conv:4:1),flatten,linear");
    assert!(e.contains("layer 1") && e.contains("starts with relu"), "{e}");
    let e = err("res(conv:4:3:p=1;conv:5:1),flatten,linear");
    assert!(e.contains("its shortcut gives 5x8x8"), "{e}");
    let e = err("res(conv:4:3:p=1,res(conv:4:9)),flatten,linear");
    assert!(e.contains("layer 0.body.1.body.0"), "{e}");
    // Nesting is bounded (parsing recurses): 100,000 levels are an error, not a stack overflow.
    let deep = format!("{}conv:3:1{},flatten,linear", "res(".repeat(100_000), ")".repeat(100_000));
    let e = deep.parse::<steepest::nn::ModelSpec>().unwrap_err().to_string();
    assert!(e.contains("--model") && e.contains("nested 100000 deep; at most 32"), "{e}");
    assert!(format!("{}conv:3:1{},flatten,linear", "res(".repeat(32), ")".repeat(32))
        .parse::<steepest::nn::ModelSpec>()
        .is_ok());
}

/// `resnet18`'s tensors are torchvision's `resnet18` state_dict, name for name and shape for
/// shape (11,689,512 parameters with 1000 classes), so its weights load as they are; a
/// checkpoint names the model `resnet18` and rebuilds with the same names.
#[test]
fn resnet18_has_torchvision_names_and_shapes() {
    let mut cpu = CpuBackend::new();
    let spec: ModelSpec = "resnet18".parse().unwrap();
    assert_eq!(spec.to_string(), "resnet18");
    let model = Model::new(&mut cpu, &spec, Shape::new(3, 224, 224), 1000, 0).unwrap();
    assert_eq!(model.num_params(), 11_689_512);
    let tensors = model.export(&mut cpu).unwrap();
    // torchvision's keys, written out.
    let mut want: Vec<(String, Vec<usize>)> = vec![("conv1.weight".into(), vec![64, 3, 7, 7])];
    let bn = |name: &str, c: usize, want: &mut Vec<(String, Vec<usize>)>| {
        for f in ["weight", "bias", "running_mean", "running_var"] {
            want.push((format!("{name}.{f}"), vec![c]));
        }
        want.push((format!("{name}.num_batches_tracked"), vec![]));
    };
    bn("bn1", 64, &mut want);
    let mut c_in = 64;
    for (layer, c) in [(1, 64), (2, 128), (3, 256), (4, 512)] {
        for block in 0..2 {
            let p = format!("layer{layer}.{block}");
            let first_in = if block == 0 { c_in } else { c };
            want.push((format!("{p}.conv1.weight"), vec![c, first_in, 3, 3]));
            bn(&format!("{p}.bn1"), c, &mut want);
            want.push((format!("{p}.conv2.weight"), vec![c, c, 3, 3]));
            bn(&format!("{p}.bn2"), c, &mut want);
            if block == 0 && layer > 1 {
                want.push((format!("{p}.downsample.0.weight"), vec![c, c_in, 1, 1]));
                bn(&format!("{p}.downsample.1"), c, &mut want);
            }
        }
        c_in = c;
    }
    want.push(("fc.weight".into(), vec![1000, 512]));
    want.push(("fc.bias".into(), vec![1000]));
    let mut got: Vec<(String, Vec<usize>)> =
        tensors.iter().map(|(n, s, _)| (n.clone(), s.clone())).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(model.head_names(), ["fc.weight", "fc.bias"]);
}
