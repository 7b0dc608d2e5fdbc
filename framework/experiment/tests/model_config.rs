//! `[model]`: the backbone's keys are checked where they are written (a key another backbone
//! uses, a missing required key, group norm without groups), and the network must fit the data
//! (an image backbone on data without an image shape is a located error naming the key).

use std::path::Path;

use clef_experiment::config::{self, ConfigError};
use clef_experiment::runner::{self, BuiltinStrategies, RunError};
use clef_testkit::Cfg;

fn parse(cfg: Cfg) -> Result<config::Config, ConfigError> {
    config::parse(&cfg.toml(), Path::new("model.toml"))
}

fn invalid_key(cfg: Cfg) -> (String, String) {
    match parse(cfg) {
        Err(ConfigError::Invalid { key, message, .. }) => (key, message),
        other => panic!("expected a located error, got {other:?}"),
    }
}

fn base() -> Cfg {
    Cfg::digits().strategy("finetune")
}

#[test]
fn each_backbone_takes_its_own_keys() {
    let (key, msg) = invalid_key(base().unset("model", "hidden"));
    assert_eq!(key, "model.hidden");
    assert!(msg.contains("required for backbone `mlp`"), "{msg}");

    let (key, msg) = invalid_key(base().set("model", "backbone", "\"resnet18\""));
    assert_eq!(key, "model.hidden", "resnet18 has no dense hidden layers");
    assert!(msg.contains("not used by backbone `resnet18`"), "{msg}");

    let (key, _) = invalid_key(base().set("model", "channels", "[8, 8]"));
    assert_eq!(key, "model.channels", "channels are not an MLP key");

    let convnet = || base().set("model", "backbone", "\"convnet\"");
    let (key, msg) = invalid_key(convnet().set("model", "norm", "\"group\""));
    assert_eq!(key, "model.groups");
    assert!(msg.contains("required"), "{msg}");
    let (key, _) = invalid_key(convnet().set("model", "groups", "2"));
    assert_eq!(key, "model.groups", "groups without group norm");
    let (key, _) = invalid_key(convnet().set("model", "channels", "[8, 0]"));
    assert_eq!(key, "model.channels");

    let (key, msg) = invalid_key(base().set("model", "pool", "\"avg\""));
    assert_eq!(key, "model.pool", "pool is a ConvNet key");
    assert!(
        msg.contains("`mlp`") && msg.contains("\"flatten\"") && msg.contains("\"avg\""),
        "{msg}"
    );
    let (key, _) = invalid_key(
        base()
            .unset("model", "hidden")
            .set("model", "backbone", "\"resnet18\"")
            .set("model", "pool", "\"flatten\""),
    );
    assert_eq!(key, "model.pool", "the ResNet always pools");
    match parse(convnet().set("model", "pool", "\"max\"")) {
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("pool") && msg.contains("flatten") && msg.contains("avg"),
                "{msg}"
            );
        }
        Ok(_) => panic!("pool = \"max\" was accepted"),
    }
    let avg = parse(convnet().set("model", "pool", "\"avg\"")).expect("pool = avg");
    assert_eq!(avg.model.pool, Some(clef_backend::ConvPool::Avg));

    let ok = convnet()
        .set("model", "channels", "[4, 4]")
        .set("model", "norm", "\"group\"")
        .set("model", "groups", "2");
    assert!(parse(ok).is_ok());
    let ok = base()
        .unset("model", "hidden")
        .set("model", "backbone", "\"resnet18\"")
        .set("model", "width", "4")
        .set("model", "blocks", "[1, 1, 1, 1]");
    assert!(parse(ok).is_ok());
}

#[test]
fn an_mlp_config_keeps_its_trial_identity() {
    // The new keys are left out of a trial's identity when unset: an MLP config written before
    // backbones existed serialises its [model] table exactly as before.
    let c = parse(base()).expect("config");
    let json = serde_json::to_value(&c.model).expect("json");
    assert_eq!(
        json,
        serde_json::json!({"hidden": [32], "activation": "relu", "init": "kaiming-uniform"})
    );
}

#[test]
fn a_convnet_config_without_pool_keeps_its_trial_identity() {
    // `pool` unset is left out of the serialised [model] table (the trial's identity), so
    // ConvNet trial ids from before the key existed stay; set, it is part of it.
    let convnet = || {
        base()
            .set("model", "backbone", "\"convnet\"")
            .set("model", "channels", "[4, 4]")
    };
    let c = parse(convnet()).expect("config");
    let json = serde_json::to_value(&c.model).expect("json");
    assert!(json.get("pool").is_none(), "{json}");
    let c = parse(convnet().set("model", "pool", "\"avg\"")).expect("config");
    let json = serde_json::to_value(&c.model).expect("json");
    assert_eq!(json["pool"], "avg");
}

#[test]
fn an_image_backbone_needs_image_data_of_a_size_it_can_shrink() {
    // 10 synthetic features are not a square image.
    let no_image = base()
        .dataset("synthetic")
        .set("data", "synthetic_dim", "10")
        .unset("model", "hidden")
        .set("model", "backbone", "\"convnet\"");
    let c = parse(no_image).expect("config");
    match runner::prepare(&c, &BuiltinStrategies) {
        Err(RunError::Config(inv)) => {
            assert_eq!(inv.key, "model.backbone");
            assert!(
                inv.message.contains("needs image inputs"),
                "{}",
                inv.message
            );
        }
        Err(e) => panic!("expected a config error, got {e}"),
        Ok(_) => panic!("a convnet on 10 plain features was accepted"),
    }
    // Digits are 8x8 images: a ConvNet of two pools fits (8 -> 4 -> 2).
    let fits = base()
        .unset("model", "hidden")
        .set("model", "backbone", "\"convnet\"")
        .set("model", "channels", "[4, 4, 4, 4]");
    let c = parse(fits).expect("config");
    assert!(runner::prepare(&c, &BuiltinStrategies).is_ok());
    // Eight convolutions pool four times: 8 -> 4 -> 2 -> 1 -> below 1x1.
    let too_deep = base()
        .unset("model", "hidden")
        .set("model", "backbone", "\"convnet\"")
        .set("model", "channels", "[4, 4, 4, 4, 4, 4, 4, 4]");
    let c = parse(too_deep).expect("config");
    match runner::prepare(&c, &BuiltinStrategies) {
        Err(RunError::Config(inv)) => assert_eq!(inv.key, "model.backbone"),
        Err(e) => panic!("expected a config error, got {e}"),
        Ok(_) => panic!("a ConvNet pooling an 8x8 image below 1x1 was accepted"),
    }
}

#[test]
fn an_image_backbone_trial_id_covers_the_image_shape() {
    // The same 16 features per row read as one 4x4 image or as four 2x2 channels: the same data
    // fingerprint, two different ConvNets, so two different trials.
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("d.csv");
    let mut text = String::new();
    for i in 0..60 {
        let px: Vec<String> = (0..16)
            .map(|j| ((i * 7 + j * 3) % 255).to_string())
            .collect();
        text.push_str(&format!("{},{}\n", px.join(","), i % 4));
    }
    std::fs::write(&csv, text).unwrap();
    let cfg = |shape: &str, backbone: &str| {
        let mut c = base()
            .tasks(2)
            .dataset("csv")
            .set("data", "path", &format!("{:?}", csv.display().to_string()))
            .set("data", "num_classes", "4")
            .set("data", "image_shape", shape);
        if backbone != "mlp" {
            c = c
                .unset("model", "hidden")
                .set("model", "backbone", backbone)
                .set("model", "channels", "[2, 2]");
        }
        parse(c).expect("config")
    };
    let ids = |c: &config::Config| {
        let plan = runner::prepare(c, &BuiltinStrategies).expect("prepare");
        let (mut sels, _) = plan.select(&Default::default());
        plan.eval_trials(&mut sels)
            .into_iter()
            .map(|t| t.id)
            .collect::<Vec<_>>()
    };
    let (one, four) = (
        cfg("[1, 4, 4]", "\"convnet\""),
        cfg("[4, 2, 2]", "\"convnet\""),
    );
    assert_ne!(
        ids(&one),
        ids(&four),
        "a ConvNet trial id must see the shape"
    );
    // An MLP does not depend on the shape: its ids stay as they were.
    assert_eq!(ids(&cfg("[1, 4, 4]", "mlp")), ids(&cfg("[4, 2, 2]", "mlp")));
}
