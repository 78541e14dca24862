//! The cluster's alarms (etcd's alarm store): NOSPACE and CORRUPT, raised
//! and cleared through raft, so every member refuses the same requests at
//! the same index. Kept in the MVCC store's meta record with the applied
//! index, so restarts and snapshots carry them.

use keel_mvcc::KvStore;
use keel_proto::etcdserverpb::alarm_request::AlarmAction;
use keel_proto::etcdserverpb::{AlarmMember, AlarmRequest, AlarmResponse, AlarmType};
use parking_lot::RwLock;
use prost::Message as _;

use crate::NodeError;

#[derive(Default)]
pub(crate) struct Alarms {
    active: RwLock<Vec<AlarmMember>>,
}

impl Alarms {
    /// The alarms as `kv` last recorded them.
    pub(crate) fn restore(kv: &KvStore) -> Result<Alarms, NodeError> {
        let alarms = Alarms::default();
        alarms.reload(kv)?;
        Ok(alarms)
    }

    /// Takes the alarms of a snapshot just installed.
    pub(crate) fn reload(&self, kv: &KvStore) -> Result<(), NodeError> {
        let active = match kv.alarms_record().map_err(NodeError::Mvcc)? {
            Some(record) => {
                AlarmResponse::decode(record.as_slice())
                    .map_err(|e| NodeError::Corrupt(format!("alarm record: {e}")))?
                    .alarms
            }
            None => Vec::new(),
        };
        *self.active.write() = active;
        Ok(())
    }

    /// Every active alarm, in the order they were raised.
    pub(crate) fn active(&self) -> Vec<AlarmMember> {
        self.active.read().clone()
    }

    pub(crate) fn is_active(&self, kind: AlarmType) -> bool {
        self.active.read().iter().any(|alarm| alarm.alarm == kind as i32)
    }

    /// Applies a committed Alarm request at `index`, as etcd's applier:
    /// GET lists the alarms of a type (NONE: all); ACTIVATE and DEACTIVATE
    /// answer with the alarm they raised or cleared (none when nothing
    /// changed).
    pub(crate) fn apply(&self, kv: &KvStore, index: u64, request: &AlarmRequest) -> Result<AlarmResponse, NodeError> {
        let mut active = self.active.write();
        let alarms = match request.action() {
            AlarmAction::Get => active
                .iter()
                .filter(|alarm| request.alarm == AlarmType::None as i32 || alarm.alarm == request.alarm)
                .cloned()
                .collect(),
            AlarmAction::Activate => {
                if request.alarm == AlarmType::None as i32 {
                    return Ok(AlarmResponse::default());
                }
                let raised = AlarmMember { member_id: request.member_id, alarm: request.alarm };
                if !active.contains(&raised) {
                    active.push(raised);
                    record(kv, index, &active)?;
                }
                vec![raised]
            }
            AlarmAction::Deactivate => {
                let cleared = AlarmMember { member_id: request.member_id, alarm: request.alarm };
                match active.iter().position(|alarm| *alarm == cleared) {
                    Some(at) => {
                        active.remove(at);
                        record(kv, index, &active)?;
                        vec![cleared]
                    }
                    None => Vec::new(),
                }
            }
        };
        Ok(AlarmResponse { header: None, alarms })
    }
}

fn record(kv: &KvStore, index: u64, active: &[AlarmMember]) -> Result<(), NodeError> {
    let record = AlarmResponse { header: None, alarms: active.to_vec() }.encode_to_vec();
    kv.apply_alarms(index, &record).map_err(NodeError::Mvcc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(action: AlarmAction, member_id: u64, alarm: AlarmType) -> AlarmRequest {
        AlarmRequest { action: action as i32, member_id, alarm: alarm as i32 }
    }

    #[test]
    fn alarms_are_raised_listed_cleared_and_survive_a_restart() {
        let kv = KvStore::in_memory();
        let alarms = Alarms::restore(&kv).unwrap();
        assert!(alarms.apply(&kv, 1, &request(AlarmAction::Get, 0, AlarmType::None)).unwrap().alarms.is_empty());
        let raised = alarms.apply(&kv, 2, &request(AlarmAction::Activate, 7, AlarmType::Nospace)).unwrap();
        assert_eq!(raised.alarms, [AlarmMember { member_id: 7, alarm: AlarmType::Nospace as i32 }]);
        // Raising it again changes nothing but answers with it, as etcd.
        assert_eq!(alarms.apply(&kv, 3, &request(AlarmAction::Activate, 7, AlarmType::Nospace)).unwrap(), raised);
        alarms.apply(&kv, 4, &request(AlarmAction::Activate, 8, AlarmType::Corrupt)).unwrap();
        assert!(alarms.is_active(AlarmType::Nospace) && alarms.is_active(AlarmType::Corrupt));
        let corrupt = alarms.apply(&kv, 5, &request(AlarmAction::Get, 0, AlarmType::Corrupt)).unwrap();
        assert_eq!(corrupt.alarms, [AlarmMember { member_id: 8, alarm: AlarmType::Corrupt as i32 }]);

        let restarted = Alarms::restore(&kv).unwrap();
        assert_eq!(restarted.active().len(), 2);
        // Clearing one that is not raised answers with nothing.
        assert!(restarted
            .apply(&kv, 6, &request(AlarmAction::Deactivate, 9, AlarmType::Nospace))
            .unwrap()
            .alarms
            .is_empty());
        restarted.apply(&kv, 7, &request(AlarmAction::Deactivate, 7, AlarmType::Nospace)).unwrap();
        assert!(!restarted.is_active(AlarmType::Nospace));
        assert_eq!(Alarms::restore(&kv).unwrap().active().len(), 1);
    }
}
