//! Every application test on the in-memory store.

eventsourcing::application_tests!(|| async { dcb::MemoryStore::new() });

/// Services spawn commands on a multi-threaded runtime: every style's future must be `Send` for
/// any store, which only a compile-time check over a generic store shows.
#[test]
fn every_style_gives_send_futures() {
    use eventsourcing::testkit::domain::{
        JoinCourse, Student, join_plain, join_with_aggregates, join_with_objects,
    };
    use eventsourcing::{Dcb, DcbRecorder, Objects, Repository, Root};

    fn assert_send<T: Send>(_: T) {}

    fn check<S: dcb::EventStore>(store: S) {
        let dcb = Dcb::new(store.clone());
        let objects = Objects::new(store.clone());
        let repository = Repository::new(DcbRecorder::new(store));
        assert_send(join_plain(&dcb, "s", "c"));
        assert_send(dcb.execute(&JoinCourse { student: "s", course: "c" }));
        assert_send(join_with_objects(&objects, "s", "c"));
        assert_send(join_with_aggregates(&repository, "s", "c"));
        let mut root = Root::<Student>::new("s");
        assert_send(repository.save(&mut root));
    }

    check(dcb::MemoryStore::new());
}
