//! The `mixed` workload's chat, decided from the run's seed before anything
//! connects: who is in which room, and message by message what each user
//! sends. Every worker (thread or process) derives the same rooms, so a
//! sender knows how many deliveries its publish owes without asking anyone.

/// Room membership: user `u` is in `of(u)`, room `r` has `size(r)` members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rooms {
    per_user: usize,
    /// `per_user` rooms for each user, in user order.
    membership: Vec<u32>,
    sizes: Vec<u32>,
}

impl Rooms {
    /// Each of `users` joins `per_user` distinct rooms out of `rooms` (all
    /// of them when `per_user >= rooms`), picked by `seed`.
    pub fn new(users: u32, rooms: u32, per_user: u32, seed: u64) -> Self {
        let per_user = per_user.min(rooms) as usize;
        let mut membership = Vec::with_capacity(users as usize * per_user);
        let mut sizes = vec![0u32; rooms as usize];
        for user in 0..users {
            let start = membership.len();
            if per_user == rooms as usize {
                membership.extend(0..rooms);
            } else {
                let mut rng = Rng::new(seed, u64::from(user));
                while membership.len() - start < per_user {
                    let room = rng.below(rooms);
                    if !membership[start..].contains(&room) {
                        membership.push(room);
                    }
                }
            }
            for &room in &membership[start..] {
                sizes[room as usize] += 1;
            }
        }
        Rooms {
            per_user,
            membership,
            sizes,
        }
    }

    /// Rooms `user` is in (empty for a user the plan does not know).
    pub fn of(&self, user: u32) -> &[u32] {
        let start = user as usize * self.per_user;
        self.membership
            .get(start..start + self.per_user)
            .unwrap_or(&[])
    }

    /// Members of `room`: the deliveries one publish to it owes, the
    /// publisher included (it is a member of the rooms it publishes to).
    pub fn size(&self, room: u32) -> u32 {
        self.sizes.get(room as usize).copied().unwrap_or(0)
    }
}

/// What a user sends next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// A publish to one of the user's rooms.
    Publish { room: u32 },
    /// A direct message to another user, on whichever server holds them.
    Send { to: u32 },
}

/// Picks the next message of `user`: a publish to one of `rooms` with
/// probability `publish_permille`/1000, else a send to another user chosen
/// uniformly (to itself only when it is the only user).
pub fn pick(rng: &mut Rng, user: u32, users: u32, rooms: &[u32], publish_permille: u32) -> Pick {
    let roll = rng.below(1000);
    if roll < publish_permille && !rooms.is_empty() {
        let room = rooms[rng.below(rooms.len() as u32) as usize];
        return Pick::Publish { room };
    }
    if users <= 1 {
        return Pick::Send { to: user };
    }
    let other = rng.below(users - 1);
    Pick::Send {
        to: if other >= user { other + 1 } else { other },
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): one add and three multiply-xors per
/// number, and any seed is a good one; a bench needs spread, not secrecy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rng(u64);

impl Rng {
    /// A generator for one `stream` (a user) of the run `seed`.
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut rng = Rng(seed ^ stream.wrapping_mul(0xd1b5_4a32_d192_ed03));
        rng.next_u64();
        rng
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-32),
    /// 0 when `n` is 0.
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_user_gets_distinct_rooms_and_sizes_add_up() {
        let rooms = Rooms::new(500, 40, 3, 7);
        let mut total = 0;
        for user in 0..500 {
            let mine = rooms.of(user);
            assert_eq!(mine.len(), 3);
            assert!(mine.iter().all(|&r| r < 40));
            let mut sorted = mine.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), 3, "user {user} joined a room twice: {mine:?}");
        }
        for room in 0..40 {
            let members = (0..500).filter(|&u| rooms.of(u).contains(&room)).count();
            assert_eq!(rooms.size(room) as usize, members);
            total += members;
        }
        assert_eq!(total, 1500);
        assert!(rooms.of(500).is_empty());
        assert_eq!(rooms.size(40), 0);
    }

    #[test]
    fn the_same_seed_gives_the_same_chat_and_another_seed_another() {
        assert_eq!(Rooms::new(100, 10, 2, 1), Rooms::new(100, 10, 2, 1));
        assert_ne!(Rooms::new(100, 10, 2, 1), Rooms::new(100, 10, 2, 2));
        let picks = |seed| {
            let mut rng = Rng::new(seed, 3);
            (0..50)
                .map(|_| pick(&mut rng, 3, 100, &[4, 5], 300))
                .collect::<Vec<_>>()
        };
        assert_eq!(picks(9), picks(9));
        assert_ne!(picks(9), picks(10));
    }

    #[test]
    fn more_rooms_asked_than_exist_means_all_of_them() {
        let rooms = Rooms::new(4, 3, 10, 0);
        assert_eq!(rooms.of(2), [0, 1, 2]);
        assert_eq!((0..3).map(|r| rooms.size(r)).collect::<Vec<_>>(), [4, 4, 4]);
    }

    #[test]
    fn picks_follow_the_share_and_never_send_to_oneself() {
        let mut rng = Rng::new(42, 0);
        let (mut publishes, mut sends) = (0u32, 0u32);
        for _ in 0..100_000 {
            match pick(&mut rng, 5, 10, &[1, 2], 250) {
                Pick::Publish { room } => {
                    assert!(room == 1 || room == 2);
                    publishes += 1;
                }
                Pick::Send { to } => {
                    assert!(to < 10 && to != 5);
                    sends += 1;
                }
            }
        }
        // 25 % publishes, within a generous statistical margin.
        assert!((24_000..26_000).contains(&publishes), "{publishes}");
        assert_eq!(publishes + sends, 100_000);
        // No rooms: only sends. One user: sends to itself.
        assert!(matches!(pick(&mut rng, 0, 3, &[], 1000), Pick::Send { .. }));
        assert_eq!(pick(&mut rng, 0, 1, &[], 0), Pick::Send { to: 0 });
    }

    #[test]
    fn below_stays_in_range() {
        let mut rng = Rng::new(0, 0);
        assert_eq!(rng.below(0), 0);
        assert!((0..10_000).all(|_| rng.below(7) < 7));
        let mut seen = [false; 7];
        for _ in 0..1000 {
            seen[rng.below(7) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
