//! An always-ready socket must not starve the other tasks of its runtime:
//! hostsock's operations take a queued datagram without waiting, and still
//! spend tokio's cooperative budget, so a busy loop yields now and then.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hostsock::UdpSocket;

const QUEUED: usize = 1000;

async fn busy_loop_sees_the_other_task(receive: bool) -> Option<usize> {
    let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    rx.set(hostsock::opts::RecvBuffer, 4 << 20).unwrap();
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..QUEUED {
        tx.send_to(b"x", rx.local_addr().unwrap()).unwrap();
    }
    let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut buf = [0u8; 8];
    // One operation each first, so that the reactor knows both sockets are
    // ready: from here on nothing in the loop has to wait.
    rx.recv(&mut buf).await.unwrap();
    sender
        .send_to(b"y", sink.local_addr().unwrap())
        .await
        .unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
    for i in 0..QUEUED - 1 {
        if ran.load(Ordering::SeqCst) {
            return Some(i);
        }
        if receive {
            rx.recv(&mut buf).await.unwrap();
        } else {
            sender
                .send_to(b"y", sink.local_addr().unwrap())
                .await
                .unwrap();
        }
    }
    None
}

#[tokio::test(flavor = "current_thread")]
async fn a_receive_loop_on_a_full_queue_yields() {
    let seen_at = busy_loop_sees_the_other_task(true).await;
    println!("the spawned task ran after {seen_at:?} receives");
    assert!(
        seen_at.is_some(),
        "the other task never ran during {QUEUED} receives"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_send_loop_on_a_writable_socket_yields() {
    let seen_at = busy_loop_sees_the_other_task(false).await;
    println!("the spawned task ran after {seen_at:?} sends");
    assert!(
        seen_at.is_some(),
        "the other task never ran during {QUEUED} sends"
    );
}
