//! The 42 SparkRTC (CloudRTC) operations, v1 and v2, compiled in.
//!
//! Transcribed from the CloudRTC API definition (`cloudrtc-operations.json`, taken from the
//! official `huaweicloudsdkcloudrtc` SDK): operation name, method, path template, where the app id
//! comes from, whether it takes a JSON body, and the content type the SDK sends with it.

use http::Method;

use super::{AppFrom, Operation};

const fn op(
    name: &'static str,
    method: Method,
    template: &'static str,
    app: AppFrom,
    has_body: bool,
    content_type: &'static str,
) -> Operation {
    Operation { name, method, template, app, has_body, content_type }
}

pub(super) static OPERATIONS: [Operation; 42] = [
    op("ListRtcAbnormalEventDimension", Method::GET, "/v1/rtc/data/abnormal-event/dimension", AppFrom::Query("app"), false, "application/json"),
    op("ListRtcAbnormalEvent", Method::GET, "/v1/{project_id}/rtc/client/abnormalevent", AppFrom::Query("app_id"), false, "application/json"),
    op("ListRtcAbnormalEvents", Method::GET, "/v1/rtc/data/abnormal-events", AppFrom::Query("app"), false, "application/json"),
    op("ListRtcClientQosDetails", Method::GET, "/v1/{project_id}/rtc/client/qos/details", AppFrom::Query("app_id"), false, "application/json"),
    op("ListRtcEvent", Method::GET, "/v1/{project_id}/rtc/client/event", AppFrom::Query("app_id"), false, "application/json"),
    op("ListRtcHistoryQuality", Method::GET, "/v1/{project_id}/rtc/history/quality", AppFrom::Query("app"), false, "application/json"),
    op("ListRtcHistoryScale", Method::GET, "/v1/{project_id}/rtc/history/scale", AppFrom::Query("app"), false, "application/json"),
    op("ListRtcHistoryUsage", Method::GET, "/v1/{project_id}/rtc/history/usage", AppFrom::Query("app"), false, "application/json"),
    op("ListRtcRealtimeNetwork", Method::GET, "/v1/{project_id}/rtc/realtime/network", AppFrom::Query("app"), false, "application/json"),
    op("ListRtcRealtimeQuality", Method::GET, "/v1/{project_id}/rtc/realtime/quality", AppFrom::Query("app"), false, "application/json"),
    op("ListRtcRealtimeScaleDimension", Method::GET, "/v1/{project_id}/rtc/realtime/scale/dimension", AppFrom::Query("app"), false, "application/json"),
    op("ListRtcRealtimeScale", Method::GET, "/v1/{project_id}/rtc/realtime/scale", AppFrom::Query("app"), false, "application/json"),
    op("ListRtcRoomList", Method::GET, "/v1/{project_id}/rtc/rooms", AppFrom::Query("app"), false, "application/json"),
    op("ListRtcUserList", Method::GET, "/v1/{project_id}/rtc/users", AppFrom::Query("app"), false, "application/json"),
    op("CreateApp", Method::POST, "/v2/apps", AppFrom::Account, true, "application/json;charset=utf-8"),
    op("CreateIndividualStreamJob", Method::POST, "/v2/apps/{app_id}/individual-stream-jobs", AppFrom::Path, true, "application/json;charset=utf-8"),
    op("CreateMixJob", Method::POST, "/v2/apps/{app_id}/mix-stream-jobs", AppFrom::Path, true, "application/json;charset=utf-8"),
    op("CreateRecordRule", Method::POST, "/v2/apps/{app_id}/record-rules", AppFrom::Path, true, "application/json;charset=utf-8"),
    op("DeleteApp", Method::DELETE, "/v2/apps/{app_id}", AppFrom::Path, false, "application/json"),
    op("DeleteRecordRule", Method::DELETE, "/v2/apps/{app_id}/record-rules/{rule_id}", AppFrom::Path, false, "application/json"),
    op("ListApps", Method::GET, "/v2/apps", AppFrom::Account, false, "application/json"),
    op("ListObsBucketObjects", Method::GET, "/v2/rtc-ops/buckets/objects", AppFrom::Account, false, "application/json"),
    op("ListObsBuckets", Method::GET, "/v2/rtc-ops/buckets", AppFrom::Account, false, "application/json"),
    op("ListRecordRules", Method::GET, "/v2/apps/{app_id}/record-rules", AppFrom::Path, false, "application/json"),
    op("RemoveRoom", Method::POST, "/v2/apps/{app_id}/rooms/{room_id}/dismiss", AppFrom::Path, false, "application/json"),
    op("RemoveUsers", Method::POST, "/v2/apps/{app_id}/rooms/{room_id}/batch-remove-users", AppFrom::Path, true, "application/json;charset=utf-8"),
    op("ShowApp", Method::GET, "/v2/apps/{app_id}", AppFrom::Path, false, "application/json"),
    op("ShowAutoRecord", Method::GET, "/v2/apps/{app_id}/auto-record-mode", AppFrom::Path, false, "application/json"),
    op("ShowIndividualStreamJob", Method::GET, "/v2/apps/{app_id}/individual-stream-jobs/{job_id}", AppFrom::Path, false, "application/json"),
    op("ShowMixJob", Method::GET, "/v2/apps/{app_id}/mix-stream-jobs/{job_id}", AppFrom::Path, false, "application/json"),
    op("ShowRecordCallback", Method::GET, "/v2/apps/{app_id}/record-callback", AppFrom::Path, false, "application/json"),
    op("ShowRecordRule", Method::GET, "/v2/apps/{app_id}/record-rules/{rule_id}", AppFrom::Path, false, "application/json"),
    op("StartApp", Method::POST, "/v2/apps/{app_id}/enable", AppFrom::Path, false, "application/json"),
    op("StopApp", Method::POST, "/v2/apps/{app_id}/disable", AppFrom::Path, false, "application/json"),
    op("StopIndividualStreamJob", Method::DELETE, "/v2/apps/{app_id}/individual-stream-jobs/{job_id}", AppFrom::Path, false, "application/json"),
    op("StopMixJob", Method::DELETE, "/v2/apps/{app_id}/mix-stream-jobs/{job_id}", AppFrom::Path, false, "application/json"),
    op("UpdateAutoRecord", Method::PUT, "/v2/apps/{app_id}/auto-record-mode", AppFrom::Path, true, "application/json;charset=utf-8"),
    op("UpdateIndividualStreamJob", Method::PUT, "/v2/apps/{app_id}/individual-stream-jobs/{job_id}", AppFrom::Path, true, "application/json;charset=utf-8"),
    op("UpdateMixJob", Method::PUT, "/v2/apps/{app_id}/mix-stream-jobs/{job_id}", AppFrom::Path, true, "application/json;charset=utf-8"),
    op("UpdateObsBucketAuthority", Method::PUT, "/v2/rtc-ops/buckets/authentication", AppFrom::Account, true, "application/json"),
    op("UpdateRecordCallback", Method::PUT, "/v2/apps/{app_id}/record-callback", AppFrom::Path, true, "application/json;charset=utf-8"),
    op("UpdateRecordRule", Method::PUT, "/v2/apps/{app_id}/record-rules/{rule_id}", AppFrom::Path, true, "application/json;charset=utf-8"),
];
