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
