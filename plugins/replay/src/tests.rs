//! Tests of the `replay` plugin against the SDK's mock host.

use super::*;
use clef_sdk::abi::{CLEF_SETTING_CLASS_IL, CLEF_SETTING_DOMAIN_IL, CLEF_SETTING_TASK_IL};
use clef_sdk::kit;
use clef_sdk::state::Floats;
use clef_sdk::testing::{AppendedRows, MockHost, MockPlugin};

clef_sdk::standard_tests!(
    Replay,
    config = "memory_size = 5\nreplay_batch_size = 3",
    docs = "../../docs/strategies.md"
);

const DIM: usize = 3;
const OUTPUTS: usize = 4;

fn config(memory: usize, replay: usize) -> String {
    format!("memory_size = {memory}\nreplay_batch_size = {replay}")
}

/// Makes the next batch: `rows` current-task rows of task `task` whose first feature is a
/// unique id (`id0 + r`), so every stored sample can be traced back.
fn set_batch(host: &mut MockHost, task: usize, id0: usize, rows: usize) {
    let s = host.state_mut();
    s.task = task;
    let units = s.tasks[task].units.clone();
    s.batch_x = (0..rows)
        .flat_map(|r| [(id0 + r) as f32, task as f32, 0.5])
        .collect();
    s.batch_targets = (0..rows).map(|r| units[(id0 + r) % units.len()]).collect();
    s.batch_current_rows = rows;
    s.appended.clear();
}

/// Runs one batch; returns what the plugin appended (at most one chunk per batch).
fn step(plugin: &mut MockPlugin, host: &mut MockHost) -> Option<AppendedRows> {
    plugin.before_batch(host).unwrap();
    let appended = &host.state().appended;
    assert!(appended.len() <= 1, "more than one append per batch");
    appended.first().cloned()
}

fn memory_of(plugin: &mut MockPlugin, host: &mut MockHost) -> Reservoir {
    kit::saved::<Replay>(plugin, host)
        .memory
        .expect("memory exists")
}

#[test]
fn the_memory_holds_exactly_memory_size_samples_of_the_stream() {
    let mut host = MockHost::new(DIM, OUTPUTS, 2);
    let mut plugin = MockPlugin::create::<Replay>(&config(10, 0)).unwrap();
    let mut offered = 0;
    for b in 0..12 {
        set_batch(&mut host, b / 6, offered, 4);
        step(&mut plugin, &mut host);
        offered += 4;
        let m = memory_of(&mut plugin, &mut host);
        assert_eq!(m.len(), offered.min(10));
        assert_eq!(m.seen(), offered as u64);
    }
    // Every stored sample is a sample of the stream, intact, with its task.
    let m = memory_of(&mut plugin, &mut host);
    let mut ids: Vec<usize> = (0..m.len()).map(|i| m.store().x(i)[0] as usize).collect();
    for i in 0..m.len() {
        let (id, task) = (m.store().x(i)[0] as usize, m.store().task(i));
        assert_eq!(m.store().x(i), &[id as f32, task as f32, 0.5]);
        assert_eq!(task, id / 24);
        assert_eq!(m.store().target(i), host.state().tasks[task].units[id % 2]);
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 10, "duplicates in the memory");
}

#[test]
fn replay_batch_size_is_respected() {
    // 0 = as many as the current rows; capped by what the memory holds.
    let mut host = MockHost::new(DIM, OUTPUTS, 2);
    let mut plugin = MockPlugin::create::<Replay>(&config(100, 0)).unwrap();
    set_batch(&mut host, 0, 0, 4);
    assert_eq!(step(&mut plugin, &mut host), None, "nothing to replay yet");
    set_batch(&mut host, 0, 4, 6);
    assert_eq!(step(&mut plugin, &mut host).unwrap().targets.len(), 4);
    set_batch(&mut host, 0, 10, 6);
    assert_eq!(step(&mut plugin, &mut host).unwrap().targets.len(), 6);
    set_batch(&mut host, 0, 16, 2);
    assert_eq!(step(&mut plugin, &mut host).unwrap().targets.len(), 2);

    // A fixed size.
    let mut host = MockHost::new(DIM, OUTPUTS, 2);
    let mut plugin = MockPlugin::create::<Replay>(&config(100, 3)).unwrap();
    set_batch(&mut host, 0, 0, 2);
    step(&mut plugin, &mut host);
    set_batch(&mut host, 0, 2, 4);
    assert_eq!(step(&mut plugin, &mut host).unwrap().targets.len(), 2);
    for b in 0..5 {
        set_batch(&mut host, 0, 6 + 4 * b, 4);
        let rows = step(&mut plugin, &mut host).unwrap();
        assert_eq!(rows.targets.len(), 3);
        // Without replacement within a batch.
        let mut ids: Vec<u32> = rows.x.chunks(DIM).map(|r| r[0] as u32).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 3);
        // Only rows of earlier batches (replay is drawn before the memory update).
        assert!(ids.iter().all(|&id| (id as usize) < 6 + 4 * b), "{ids:?}");
    }

    // memory_size = 0 never replays.
    let mut host = MockHost::new(DIM, OUTPUTS, 2);
    let mut plugin = MockPlugin::create::<Replay>(&config(0, 5)).unwrap();
    for b in 0..3 {
        set_batch(&mut host, 0, 4 * b, 4);
        assert_eq!(step(&mut plugin, &mut host), None);
    }
}

#[test]
fn task_il_rows_carry_their_own_task_head() {
    let mut host = MockHost::new(DIM, OUTPUTS, 2);
    assert_eq!(host.state().setting, CLEF_SETTING_TASK_IL);
    let mut plugin = MockPlugin::create::<Replay>(&config(50, 8)).unwrap();
    let mut id = 0;
    for _ in 0..5 {
        set_batch(&mut host, 0, id, 4);
        step(&mut plugin, &mut host);
        id += 4;
    }
    let heads = [[true, true, false, false], [false, false, true, true]];
    let mut seen_tasks = [false; 2];
    for b in 0..6 {
        set_batch(&mut host, 1, id, 4);
        let rows = step(&mut plugin, &mut host).unwrap();
        id += 4;
        let masks = rows.masks.expect("task-IL rows carry masks");
        assert_eq!(masks.len(), rows.targets.len() * OUTPUTS);
        for (r, (x, &target)) in rows.x.chunks(DIM).zip(&rows.targets).enumerate() {
            let task = x[1] as usize;
            seen_tasks[task] = true;
            assert_eq!(&masks[r * OUTPUTS..(r + 1) * OUTPUTS], &heads[task][..]);
            assert!(masks[r * OUTPUTS + target], "target outside its own head");
            if b == 0 {
                assert_eq!(task, 0, "the first batch of task 1 can only replay task 0");
            }
        }
    }
    assert_eq!(seen_tasks, [true, true]);
}

#[test]
fn class_il_and_domain_il_rows_use_the_current_training_mask() {
    for setting in [CLEF_SETTING_CLASS_IL, CLEF_SETTING_DOMAIN_IL] {
        let mut host = MockHost::new(DIM, OUTPUTS, 2);
        host.state_mut().setting = setting;
        let mut plugin = MockPlugin::create::<Replay>(&config(50, 4)).unwrap();
        for b in 0..4 {
            set_batch(&mut host, b / 2, 4 * b, 4);
            if let Some(rows) = step(&mut plugin, &mut host) {
                assert_eq!(rows.masks, None);
                assert_eq!(rows.targets.len(), 4);
            }
        }
    }
}

#[test]
fn replayed_rows_are_stored_rows() {
    let mut host = MockHost::new(DIM, OUTPUTS, 2);
    let mut plugin = MockPlugin::create::<Replay>(&config(6, 4)).unwrap();
    for b in 0..10 {
        set_batch(&mut host, 0, 4 * b, 4);
        let before = kit::saved::<Replay>(&mut plugin, &mut host)
            .memory
            .unwrap_or_else(|| Reservoir::new(6, DIM, 0));
        if let Some(rows) = step(&mut plugin, &mut host) {
            for (x, &t) in rows.x.chunks(DIM).zip(&rows.targets) {
                assert!(
                    (0..before.len())
                        .any(|i| before.store().x(i) == x && before.store().target(i) == t),
                    "replayed a row that was not in the memory"
                );
            }
        }
    }
}

/// The rows appended over a fixed scenario; the mock host's RNG is seeded identically for
/// every `MockHost`, so two runs must agree.
fn run_scenario(memory: usize) -> Vec<Option<AppendedRows>> {
    let mut host = MockHost::new(DIM, OUTPUTS, 2);
    let mut plugin = MockPlugin::create::<Replay>(&config(memory, 3)).unwrap();
    (0..8)
        .map(|b| {
            set_batch(&mut host, b / 4, 4 * b, 4);
            step(&mut plugin, &mut host)
        })
        .collect()
}

#[test]
fn reproducible_for_a_seed() {
    let a = run_scenario(5);
    assert_eq!(a, run_scenario(5));
    assert!(a.iter().flatten().count() >= 6);
}

#[test]
fn the_restored_memory_is_used() {
    let mut host = MockHost::new(DIM, OUTPUTS, 2);
    let mut plugin = MockPlugin::create::<Replay>(&config(7, 0)).unwrap();
    assert!(kit::saved::<Replay>(&mut plugin, &mut host)
        .memory
        .is_none());
    for b in 0..5 {
        set_batch(&mut host, 0, 4 * b, 4);
        step(&mut plugin, &mut host);
    }
    let saved = plugin.save_state(&mut host).unwrap();
    let memory = memory_of(&mut plugin, &mut host);
    assert_eq!((memory.len(), memory.seen(), memory.capacity()), (7, 20, 7));

    let mut fresh = MockPlugin::create::<Replay>(&config(7, 0)).unwrap();
    fresh.load_state(&mut host, &saved).unwrap();
    assert_eq!(memory_of(&mut fresh, &mut host), memory);
    // The restored memory is used: its first batch replays stored rows only.
    set_batch(&mut host, 0, 100, 4);
    let rows = step(&mut fresh, &mut host).unwrap();
    for x in rows.x.chunks(DIM) {
        assert!((0..memory.len()).any(|i| memory.store().x(i) == x));
    }
    assert_eq!(memory_of(&mut fresh, &mut host).seen(), 24);
}

#[test]
fn a_memory_of_another_width_is_an_error() {
    let mut host = MockHost::new(DIM, OUTPUTS, 2);
    let mut plugin = MockPlugin::create::<Replay>(&config(4, 0)).unwrap();
    // The memory was created for inputs of another width.
    let mut other = MockHost::new(DIM + 1, OUTPUTS, 2);
    {
        let s = other.state_mut();
        s.batch_x = vec![0.0; 2 * (DIM + 1)];
        s.batch_targets = vec![0, 1];
        s.batch_current_rows = 2;
    }
    plugin.before_batch(&mut other).unwrap();
    assert_eq!(memory_of(&mut plugin, &mut other).store().dim(), DIM + 1);
    set_batch(&mut host, 0, 0, 4);
    let err = plugin.before_batch(&mut host).unwrap_err();
    assert!(err.message.contains("features"), "{err}");
}

#[test]
fn an_inconsistent_saved_memory_is_refused_on_load() {
    let mut host = MockHost::new(DIM, OUTPUTS, 2);
    let mut plugin = MockPlugin::create::<Replay>(&config(7, 0)).unwrap();
    for b in 0..5 {
        set_batch(&mut host, 0, 4 * b, 4);
        step(&mut plugin, &mut host);
    }
    let saved = plugin.save_state(&mut host).unwrap();
    let payload = clef_sdk::state::open("replay", 2, &saved).unwrap().to_vec();
    // The strategy's fields in order: memory_size, replay_batch_size, the memory (unchecked):
    // capacity, seen, and the store (dim, width, inputs, payloads, targets, tasks).
    type Store = (usize, usize, Floats, Floats, Vec<usize>, Vec<usize>);
    type Raw = (usize, usize, Option<(usize, u64, Store)>);
    let mut raw: Raw = clef_sdk::state::decode(&payload).unwrap();
    let memory = raw.2.as_mut().expect("a memory after five batches");
    assert_eq!(
        (raw.0, memory.0, memory.1, memory.2 .0, memory.2 .1),
        (7, 7, 20, 3, 0)
    );
    memory.1 = 3; // 7 samples held after 3 offered
    let bad = clef_sdk::state::encode(&raw).unwrap();
    let mut fresh = MockPlugin::create::<Replay>(&config(7, 0)).unwrap();
    let err = fresh
        .load_state(&mut host, &clef_sdk::state::seal("replay", 2, &bad))
        .unwrap_err();
    assert!(
        err.message
            .contains("reservoir memory: 7 samples held after 3 offered (capacity 7)"),
        "{err}"
    );
    fresh
        .load_state(&mut host, &clef_sdk::state::seal("replay", 2, &payload))
        .unwrap();
    // A version-1 state (the memory before it moved to the SDK) is refused, naming both.
    let err = fresh
        .load_state(&mut host, &clef_sdk::state::seal("replay", 1, &payload))
        .unwrap_err();
    assert!(err.message.contains("state version 1"), "{err}");
}
