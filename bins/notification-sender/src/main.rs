//! `notification-sender`: the notification-sender stage binary (rules.alerts.triggered +
//! config.changes → webhooks, Slack, e-mail and in-app notifications; state in PostgreSQL).

use notification_sender::stage::{NotificationSender, NotifySettings};

fn main() {
    runtime::run::<NotificationSender, NotifySettings>(
        "notification-sender: delivers alerts to each org's channels (webhook, Slack, e-mail, \
         in-app) once per alert and channel, with retries, rate limits and a DLQ \
         (rules.alerts.triggered + config.changes)",
        NotificationSender::new,
    );
}
