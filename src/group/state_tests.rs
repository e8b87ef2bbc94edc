use super::*;

fn limits() -> Limits {
    Limits {
        min_session_timeout_ms: 1000,
        max_session_timeout_ms: 60_000,
        initial_rebalance_delay_ms: 0,
        max_size: 10,
    }
}

fn req(member: &str, instance: Option<&str>, protos: &[&str]) -> JoinRequest {
    JoinRequest {
        member_id: member.into(),
        instance_id: instance.map(Into::into),
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 20_000,
        protocol_type: "consumer".into(),
        protocols: protos
            .iter()
            .map(|p| (p.to_string(), Bytes::from(p.to_string())))
            .collect(),
        require_known_member_id: true,
    }
}

fn now_of(r: Reply<JoinResult>) -> JoinResult {
    match r {
        Reply::Now(j) => j,
        Reply::Wait(_) => panic!("expected an immediate answer"),
    }
}

fn wait_of<T>(r: Reply<T>) -> oneshot::Receiver<T> {
    match r {
        Reply::Wait(rx) => rx,
        Reply::Now(_) => panic!("expected to wait"),
    }
}

fn ready<T>(rx: &mut oneshot::Receiver<T>) -> T {
    rx.try_recv().expect("sender alive").expect("answered")
}

/// Joins a dynamic member through MEMBER_ID_REQUIRED; returns its id and the
/// pending join.
fn join_new(g: &mut Group, id: &str, now: i64) -> (String, oneshot::Receiver<JoinResult>) {
    let first = now_of(g.join(req("", None, &["range"]), &limits(), now, || id.into()));
    assert_eq!(first.error, E::MemberIdRequired.code());
    let rx = wait_of(g.join(req(id, None, &["range"]), &limits(), now, || unreachable!()));
    (id.to_string(), rx)
}

fn sync(g: &mut Group, id: &str, gen: i32, assign: Vec<(String, Bytes)>) -> Reply<SyncResult> {
    g.sync(
        SyncRequest {
            member_id: id.into(),
            instance_id: None,
            generation: gen,
            protocol_type: None,
            protocol_name: None,
            assignments: assign,
        },
        0,
    )
}

#[test]
fn single_member_join_sync_heartbeat() {
    let mut g = Group::new("g", 0);
    let (id, mut rx) = join_new(&mut g, "m1", 0);
    let j = ready(&mut rx);
    assert_eq!((j.error, j.generation, j.leader.as_str()), (0, 1, "m1"));
    assert_eq!(j.members.len(), 1);
    assert_eq!(j.protocol_name.as_deref(), Some("range"));
    assert_eq!(g.state, GroupState::CompletingRebalance);
    let mut srx = wait_of(sync(&mut g, &id, 1, vec![(id.clone(), Bytes::from("A"))]));
    assert_eq!(ready(&mut srx).assignment, Bytes::from("A"));
    assert_eq!(g.state, GroupState::Stable);
    assert!(g.take_store());
    assert_eq!(g.heartbeat(&id, None, 1, 10), 0);
    assert_eq!(g.heartbeat(&id, None, 0, 10), E::IllegalGeneration.code());
    assert_eq!(g.heartbeat("x", None, 1, 10), E::UnknownMemberId.code());
}

#[test]
fn second_member_triggers_rebalance_and_leader_assigns() {
    let mut g = Group::new("g", 0);
    let (a, mut arx) = join_new(&mut g, "a", 0);
    ready(&mut arx);
    drop(wait_of(sync(
        &mut g,
        &a,
        1,
        vec![(a.clone(), Bytes::from("all"))],
    )));
    let (b, mut brx) = join_new(&mut g, "b", 1);
    assert_eq!(g.state, GroupState::PreparingRebalance);
    assert!(brx.try_recv().expect("alive").is_none());
    assert_eq!(g.heartbeat(&a, None, 1, 2), E::RebalanceInProgress.code());
    let mut arx = wait_of(g.join(req(&a, None, &["range"]), &limits(), 3, || unreachable!()));
    let (ja, jb) = (ready(&mut arx), ready(&mut brx));
    assert_eq!((ja.generation, jb.generation), (2, 2));
    assert_eq!(ja.members.len(), 2);
    assert!(jb.members.is_empty());
    let mut bs = wait_of(sync(&mut g, &b, 2, vec![]));
    assert!(bs.try_recv().expect("alive").is_none());
    let assign = vec![
        (a.clone(), Bytes::from("p0")),
        (b.clone(), Bytes::from("p1")),
    ];
    let mut as_ = wait_of(sync(&mut g, &a, 2, assign));
    assert_eq!(ready(&mut as_).assignment, Bytes::from("p0"));
    assert_eq!(ready(&mut bs).assignment, Bytes::from("p1"));
}

#[test]
fn leave_and_session_expiry_rebalance_the_rest() {
    let mut g = Group::new("g", 0);
    let (a, mut arx) = join_new(&mut g, "a", 0);
    let (b, mut brx) = join_new(&mut g, "b", 0);
    // "a" completed alone first; "b" joining started a new round.
    ready(&mut arx);
    let mut arx = wait_of(g.join(req(&a, None, &["range"]), &limits(), 0, || unreachable!()));
    ready(&mut arx);
    ready(&mut brx);
    let gen = g.generation;
    let _ = sync(&mut g, &a, gen, vec![]);
    assert_eq!(g.state, GroupState::Stable);
    let gen = g.generation;
    assert_eq!(g.leave(&b, None, &limits(), 5), 0);
    assert_eq!(g.state, GroupState::PreparingRebalance);
    let mut arx = wait_of(g.join(req(&a, None, &["range"]), &limits(), 6, || unreachable!()));
    let j = ready(&mut arx);
    assert_eq!(j.generation, gen + 1);
    let _ = sync(&mut g, &a, j.generation, vec![]);
    // No heartbeat from "a" for longer than its session: the group empties.
    g.tick(&limits(), 6 + 10_001);
    assert_eq!(g.state, GroupState::Empty);
    assert!(g.members.is_empty());
}

#[test]
fn rebalance_timeout_drops_members_that_do_not_rejoin() {
    let mut g = Group::new("g", 0);
    let (a, mut arx) = join_new(&mut g, "a", 0);
    ready(&mut arx);
    let _ = sync(&mut g, &a, 1, vec![]);
    let (_b, mut brx) = join_new(&mut g, "b", 100);
    g.tick(&limits(), 100 + 5_000);
    assert!(brx.try_recv().expect("alive").is_none(), "waits for a");
    g.tick(&limits(), 100 + 20_001);
    let j = ready(&mut brx);
    assert_eq!((j.error, j.leader.as_str(), j.members.len()), (0, "b", 1));
}

#[test]
fn static_member_rejoins_without_rebalance() {
    let mut g = Group::new("g", 0);
    let mut r = req("", Some("i1"), &["range"]);
    let mut rx = wait_of(g.join(r.clone(), &limits(), 0, || "s1".into()));
    let j = ready(&mut rx);
    let _ = sync(
        &mut g,
        "s1",
        j.generation,
        vec![("s1".into(), Bytes::from("P"))],
    );
    assert_eq!(g.state, GroupState::Stable);
    g.take_store();
    r.member_id = String::new();
    let j2 = now_of(g.join(r, &limits(), 5, || "s2".into()));
    assert_eq!(
        (j2.error, j2.generation, j2.member_id.as_str()),
        (0, 1, "s2")
    );
    assert_eq!(g.state, GroupState::Stable);
    assert!(g.take_store());
    // The old id is fenced.
    assert_eq!(
        g.heartbeat("s1", Some("i1"), 1, 6),
        E::FencedInstanceId.code()
    );
    let mut s = match sync(&mut g, "s2", 1, vec![]) {
        Reply::Now(s) => s,
        Reply::Wait(mut rx) => ready(&mut rx),
    };
    assert_eq!(std::mem::take(&mut s.assignment), Bytes::from("P"));
}

#[test]
fn commits_need_the_current_generation() {
    let mut g = Group::new("g", 0);
    assert_eq!(g.validate_commit("", None, -1, 0), Ok(()));
    let (a, mut arx) = join_new(&mut g, "a", 0);
    ready(&mut arx);
    assert_eq!(
        g.validate_commit(&a, None, 1, 0),
        Err(E::RebalanceInProgress.code())
    );
    let _ = sync(&mut g, &a, 1, vec![]);
    assert_eq!(g.validate_commit(&a, None, 1, 0), Ok(()));
    assert_eq!(
        g.validate_commit(&a, None, 0, 0),
        Err(E::IllegalGeneration.code())
    );
    assert_eq!(
        g.validate_commit("", None, -1, 0),
        Err(E::UnknownMemberId.code())
    );
}

#[test]
fn inconsistent_protocols_and_bad_session_timeouts_are_refused() {
    let mut g = Group::new("g", 0);
    let (_a, mut arx) = join_new(&mut g, "a", 0);
    ready(&mut arx);
    let j = now_of(g.join(req("", None, &["roundrobin"]), &limits(), 0, || "x".into()));
    assert_eq!(j.error, E::InconsistentGroupProtocol.code());
    let mut r = req("", None, &["range"]);
    r.session_timeout_ms = 10;
    let j = now_of(g.join(r, &limits(), 0, || "x".into()));
    assert_eq!(j.error, E::InvalidSessionTimeout.code());
}

#[test]
fn group_value_round_trips_through_restore() {
    let mut g = Group::new("g", 0);
    let (a, mut arx) = join_new(&mut g, "a", 0);
    ready(&mut arx);
    let _ = sync(&mut g, &a, 1, vec![(a.clone(), Bytes::from("X"))]);
    let r = Group::restore("g", g.value(), 100);
    assert_eq!(r.state, GroupState::Stable);
    assert_eq!(r.generation, 1);
    assert_eq!(r.leader.as_deref(), Some("a"));
    assert_eq!(r.members[0].assignment, Bytes::from("X"));
    assert_eq!(r.members[0].metadata("range"), Bytes::from("range"));
}

#[test]
fn members_joining_before_the_first_rebalance_completes_are_accepted() {
    // Two members get their ids (MEMBER_ID_REQUIRED) before either rejoins;
    // the first one's rejoin cannot complete the round (the second is still
    // pending), and the second's rejoin must still be accepted: the group
    // took its protocol type from its first member, as Kafka's does.
    let mut g = Group::new("g", 0);
    for id in ["m1", "m2"] {
        let first = now_of(g.join(req("", None, &["range"]), &limits(), 0, || id.into()));
        assert_eq!(first.error, E::MemberIdRequired.code());
    }
    let mut rx1 = wait_of(g.join(req("m1", None, &["range"]), &limits(), 0, || unreachable!()));
    let mut rx2 = wait_of(g.join(req("m2", None, &["range"]), &limits(), 0, || unreachable!()));
    let (j1, j2) = (ready(&mut rx1), ready(&mut rx2));
    assert_eq!((j1.error, j2.error), (0, 0));
    assert_eq!((j1.generation, j2.generation), (1, 1));
}
