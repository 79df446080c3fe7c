//! The per-connection byte limits, from the hostile peer's side: one that stops reading while
//! we gossip, one that floods us faster than the driver handles it. The connection runs over an
//! in-memory duplex with a real Noise session.

use std::time::{Duration, Instant};

use meshnet_mesh::handshake::{Decision, Handshake, HandshakeConfig, HandshakeEvent, Session};
use meshnet_mesh::{Hello, PeerUid, ShortId};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

const MIB: usize = 1 << 20;

fn config(seed: u8, outbound: bool) -> HandshakeConfig {
    let (private_key, public) = meshnet_mesh::handshake::generate_keypair([seed; 32]).unwrap();
    HandshakeConfig {
        private_key,
        psk: None,
        hello: Hello {
            name: public.derived_name(),
            name_derived: true,
            nickname: format!("side{seed}"),
            uid: PeerUid(u64::from(seed)),
            conn_half: u64::from(seed),
            short_id: ShortId::from_low_bits(u64::from(seed)),
            listen_port: 6783,
            trusted: false,
        },
        outbound,
        seed: [seed.wrapping_add(100); 32],
    }
}

/// Two established sessions (dialler, acceptor), by running both handshakes in memory.
fn sessions() -> (Session, Session) {
    let now = Instant::now();
    let mut ends = [
        Handshake::new(config(1, true), now),
        Handshake::new(config(2, false), now),
    ];
    let mut done: [Option<Session>; 2] = [None, None];
    for _ in 0..32 {
        for i in 0..2 {
            while let Some(bytes) = ends[i].poll_transmit() {
                ends[1 - i].handle_input(&bytes, now);
            }
            while let Some(ev) = ends[i].poll_event() {
                match ev {
                    HandshakeEvent::Authenticated { .. } => {
                        ends[i].handle_decision(Decision::Accept, now)
                    }
                    HandshakeEvent::Established(s) => done[i] = Some(*s),
                    HandshakeEvent::Failed { error, .. } => panic!("handshake failed: {error}"),
                }
            }
        }
        if done.iter().all(Option::is_some) {
            let [a, b] = done;
            return (a.unwrap(), b.unwrap());
        }
    }
    panic!("the in-memory handshake did not finish");
}

/// Our connection's pump over a duplex; returns the peer's end of the socket and its session.
fn connection(
    conn: ConnId,
    reports: Reports,
) -> (
    SendQueue,
    DuplexStream,
    Session,
    tokio::task::JoinHandle<()>,
) {
    let (ours, theirs) = sessions();
    let (our_io, their_io) = tokio::io::duplex(64 * 1024);
    let (queue, reader) = send_queue(MAX_QUEUED_BYTES_PER_CONN);
    let task = tokio::spawn(pump(conn, our_io, ours, reader, reports));
    (queue, their_io, theirs, task)
}

/// The connection task reports that it closed, within 5 s.
async fn assert_closed(rx: &mut mpsc::Receiver<ConnReport>) {
    let closed = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
    assert!(
        matches!(closed, Ok(Some(ConnReport::Closed { .. }))),
        "{closed:?}"
    );
}

/// Lets the connection task run until it blocks.
async fn settle() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_peer_that_stops_reading_passes_the_byte_limit_and_nothing_more_is_queued() {
    let (reports, mut rx) = super::reports();
    // The peer never reads its end of the socket.
    let (queue, _stalled, _session, task) = connection(ConnId(1), reports);
    let msg = vec![7u8; MIB];
    let mut accepted = 0usize;
    let error = loop {
        match queue.push(msg.clone()) {
            Ok(()) => accepted += msg.len(),
            Err(e) => break e,
        }
        // Give the writer its chance to drain (it blocks once the socket is full).
        settle().await;
        assert!(
            accepted < 1024 * MIB,
            "queued {accepted} bytes for a stalled peer"
        );
    };
    assert!(
        matches!(error, SendError::Full { limit, .. } if limit == MAX_QUEUED_BYTES_PER_CONN),
        "{error}"
    );
    assert!(error.to_string().contains("stopped reading"), "{error}");
    // What sits in the queue is bounded; beyond it only one write batch and the socket buffer.
    assert!(queue.queued() <= MAX_QUEUED_BYTES_PER_CONN);
    assert!(
        accepted <= MAX_QUEUED_BYTES_PER_CONN + WRITE_BATCH + 2 * MIB,
        "accepted {accepted} bytes"
    );
    // The connection itself is still up: dropping the queue (the driver's close) ends it.
    drop(queue);
    assert_closed(&mut rx).await;
    task.abort();
}

#[tokio::test]
async fn a_peer_that_reads_is_never_dropped_for_queueing_more_than_the_limit_in_total() {
    let (reports, _rx) = super::reports();
    let (queue, mut peer, mut session, task) = connection(ConnId(1), reports);
    let total = 2 * MAX_QUEUED_BYTES_PER_CONN;
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0usize;
        while got < total {
            let n = peer.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed after {got} bytes");
            session.opener.handle_input(&buf[..n]);
            while let Some(m) = session.opener.poll_message() {
                got += m.unwrap().len();
            }
        }
        got
    });
    for _ in 0..total / MIB {
        queue.push(vec![1u8; MIB]).unwrap();
        settle().await;
    }
    let got = tokio::time::timeout(Duration::from_secs(60), reader).await;
    assert_eq!(got.unwrap().unwrap(), total);
    task.abort();
}

#[tokio::test]
async fn a_flooding_peer_holds_at_most_its_budget_and_another_connection_still_gets_through() {
    let (reports, mut rx) = super::reports();
    let (_q1, mut flooder, mut flood_session, flood_task) = connection(ConnId(1), reports.clone());
    let (_q2, mut quiet, mut quiet_session, quiet_task) = connection(ConnId(2), reports);
    let flood_total = 4 * MAX_UNPROCESSED_BYTES_PER_CONN;
    let flood = tokio::spawn(async move {
        let mut out = Vec::new();
        let mut sent = 0usize;
        while sent < flood_total {
            out.clear();
            flood_session
                .sealer
                .seal(&vec![9u8; MIB], &mut out)
                .unwrap();
            flooder.write_all(&out).await.unwrap();
            sent += MIB;
        }
        sent
    });
    // The driver is busy: it takes the flood's reports but does not finish handling them.
    let mut held = Vec::new();
    let mut held_bytes = 0usize;
    while let Ok(Some(report)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
        match report {
            ConnReport::Message {
                conn: ConnId(1),
                bytes,
                budget,
            } => {
                held_bytes += bytes.len();
                held.push(budget);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(held_bytes > 0, "nothing of the flood arrived");
    assert!(
        held_bytes <= MAX_UNPROCESSED_BYTES_PER_CONN,
        "the flood holds {held_bytes} bytes"
    );
    assert!(!flood.is_finished(), "the flooder was not pushed back");

    // Meanwhile another peer's message reaches the driver.
    let mut out = Vec::new();
    quiet_session.sealer.seal(b"hello", &mut out).unwrap();
    quiet.write_all(&out).await.unwrap();
    // (On a loaded machine more of the flood may come first; it is handled and counted.)
    let mut handled = 0usize;
    let got = loop {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(ConnReport::Message {
                conn: ConnId(2),
                bytes,
                ..
            })) => break bytes,
            Ok(Some(ConnReport::Message { bytes, .. })) => handled += bytes.len(),
            other => panic!("the quiet peer's message did not arrive: {other:?}"),
        }
    };
    assert_eq!(got, b"hello");

    // Once the driver has handled the flood's messages the reader takes the rest.
    drop(held);
    let rest = flood_total - held_bytes - handled;
    let drained = tokio::spawn(async move {
        let mut n = 0usize;
        while n < rest {
            match rx.recv().await {
                Some(ConnReport::Message {
                    conn: ConnId(1),
                    bytes,
                    ..
                }) => n += bytes.len(),
                Some(_) => {}
                None => break,
            }
        }
        n
    });
    let sent = tokio::time::timeout(Duration::from_secs(60), flood).await;
    assert_eq!(sent.unwrap().unwrap(), flood_total);
    let n = tokio::time::timeout(Duration::from_secs(60), drained).await;
    assert_eq!(n.unwrap().unwrap(), rest);
    flood_task.abort();
    quiet_task.abort();
}

/// Everything the peer reads from `peer` until the connection ends: the messages' lengths.
async fn read_until_closed(mut peer: DuplexStream, mut session: Session) -> Vec<usize> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = Vec::new();
    loop {
        let n = peer.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return got;
        }
        session.opener.handle_input(&buf[..n]);
        while let Some(m) = session.opener.poll_message() {
            got.push(m.unwrap().len());
        }
    }
}

#[tokio::test]
async fn a_finished_queue_is_written_out_before_the_connection_closes() {
    let (reports, mut rx) = super::reports();
    let (queue, peer, session, task) = connection(ConnId(1), reports);
    // More than the duplex holds, queued before the peer reads anything: the writer is
    // blocked mid-way when the queue is finished.
    let sizes: Vec<usize> = (1..=8).map(|i| i * 100 * 1024).collect();
    for &n in &sizes {
        queue.push(vec![3u8; n]).unwrap();
    }
    settle().await;
    let _token = queue.finish();
    let got = tokio::time::timeout(Duration::from_secs(30), read_until_closed(peer, session)).await;
    assert_eq!(
        got.expect("the peer reads to the end"),
        sizes,
        "every message, in order"
    );
    assert_closed(&mut rx).await;
    task.abort();
}

#[tokio::test]
async fn a_finished_queue_still_closes_at_once_when_its_token_is_cancelled() {
    let (reports, mut rx) = super::reports();
    // The peer never reads: finishing cannot complete, cancelling ends it.
    let (queue, _stalled, _session, task) = connection(ConnId(1), reports);
    for _ in 0..8 {
        queue.push(vec![5u8; MIB]).unwrap();
    }
    settle().await;
    let token = queue.finish();
    settle().await;
    assert!(
        rx.try_recv().is_err(),
        "still writing to a peer that does not read"
    );
    token.cancel();
    assert_closed(&mut rx).await;
    task.abort();
}
