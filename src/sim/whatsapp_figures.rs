//! What the simulated WhatsApp customers counted (`simulate --whatsapp-share`), and the figures
//! the report shows: conversations and the orders they placed, time to order, the bot's reply
//! latency, redeliveries and the duplicate actions they caused, and failures by reason.

use std::collections::BTreeMap;

use serde::Serialize;

use super::summary::Summary;

/// One conversation's account, added to the run's when it ends.
#[derive(Debug, Default, Clone)]
pub struct Talked {
    /// Webhook calls made (redeliveries included).
    pub webhook_calls: u64,
    /// Webhook calls that repeated an earlier one (same body, same `wamid`).
    pub redeliveries: u64,
    /// Bot messages that came after a redelivery, for a message already answered: the bot acted
    /// on it twice.
    pub duplicate_actions: u64,
    /// Bot messages the customer was not waiting for (a note before the question, say).
    pub unexpected_replies: u64,
    /// Webhook POST → the bot's first reply at the Graph API stand-in, milliseconds.
    pub reply_latency_ms: Vec<f64>,
    /// Payments declined on purpose (then paid with Visa).
    pub declined_first: u64,
    /// Times a number held back a message to stay within the webhook's per-number limit.
    pub waits_for_the_limit: u64,
}

/// Everything the WhatsApp customers counted during a run.
#[derive(Debug, Default)]
pub struct ChatStats {
    pub conversations: usize,
    pub orders: usize,
    /// First "hi" → the bot's "Order #… placed", seconds.
    pub time_to_order_secs: Vec<f64>,
    pub talked: Talked,
    /// Why conversations did not end in an order.
    pub failures: BTreeMap<String, u64>,
}

impl ChatStats {
    /// Adds one conversation's account.
    pub fn add(&mut self, talked: Talked) {
        let all = &mut self.talked;
        all.webhook_calls += talked.webhook_calls;
        all.redeliveries += talked.redeliveries;
        all.duplicate_actions += talked.duplicate_actions;
        all.unexpected_replies += talked.unexpected_replies;
        all.declined_first += talked.declined_first;
        all.waits_for_the_limit += talked.waits_for_the_limit;
        all.reply_latency_ms.extend(talked.reply_latency_ms);
    }

    pub fn failed(&mut self, reason: &str) {
        *self.failures.entry(reason.to_owned()).or_default() += 1;
    }

    /// The figures, for `customers` WhatsApp customers out of `of`.
    pub fn figures(&self, customers: usize, of: usize) -> WhatsAppFigures {
        let talked = &self.talked;
        WhatsAppFigures {
            customers,
            share_of_customers: customers as f64 / of.max(1) as f64,
            conversations: self.conversations,
            orders: self.orders,
            conversion: if self.conversations == 0 {
                0.0
            } else {
                self.orders as f64 / self.conversations as f64
            },
            time_to_order_secs: Summary::of(self.time_to_order_secs.clone()),
            reply_latency_ms: Summary::of(talked.reply_latency_ms.clone()),
            webhook_calls: talked.webhook_calls,
            redeliveries: talked.redeliveries,
            duplicate_actions: talked.duplicate_actions,
            unexpected_replies: talked.unexpected_replies,
            declined_first: talked.declined_first,
            waits_for_the_limit: talked.waits_for_the_limit,
            failures: self.failures.clone(),
        }
    }
}

/// What the WhatsApp customers measured (`--whatsapp-share`).
#[derive(Debug, Clone, Serialize)]
pub struct WhatsAppFigures {
    /// Customers ordering over WhatsApp, each a phone number.
    pub customers: usize,
    pub share_of_customers: f64,
    /// Conversations started (a "hi" sent).
    pub conversations: usize,
    /// Orders placed over WhatsApp (paid, and the bot said so).
    pub orders: usize,
    /// Orders over conversations, 0 to 1.
    pub conversion: f64,
    /// First "hi" → "Order #… placed" at the Graph API stand-in, seconds (think time included).
    pub time_to_order_secs: Summary,
    /// Webhook POST → the bot's first reply at the Graph API stand-in, milliseconds.
    pub reply_latency_ms: Summary,
    pub webhook_calls: u64,
    /// Webhook calls sent again with the same `wamid`, as Meta does.
    pub redeliveries: u64,
    /// Must be 0: a redelivered message the bot acted on again.
    pub duplicate_actions: u64,
    pub unexpected_replies: u64,
    /// Conversations that paid with a declined card first, then Visa.
    pub declined_first: u64,
    /// Messages held back to stay within the webhook's per-number limit (time to order
    /// includes the wait).
    pub waits_for_the_limit: u64,
    /// Conversations that did not end in an order, by reason.
    pub failures: BTreeMap<String, u64>,
}

impl WhatsAppFigures {
    /// Every conversation ended in an order, and no message acted twice.
    pub fn clean(&self) -> bool {
        self.failures.is_empty() && self.duplicate_actions == 0 && self.orders == self.conversations
    }

    /// The report's WhatsApp lines.
    pub fn table(&self) -> String {
        let mut out = format!(
            "  {:<28} {} customers ({:.0} % of them), {} conversations, {} orders placed, conversion {:.1} %\n",
            "WhatsApp ordering",
            self.customers,
            self.share_of_customers * 100.0,
            self.conversations,
            self.orders,
            self.conversion * 100.0
        );
        let t = &self.time_to_order_secs;
        out += &format!(
            "  {:<28} p50 {:>7.1}  p90 {:>7.1}  max {:>7.1}  s ({} orders)\n",
            "time to order (hi → placed)", t.p50, t.p90, t.max, t.count
        );
        let l = &self.reply_latency_ms;
        out += &format!(
            "  {:<28} p50 {:>7.1}  p99 {:>7.1}  max {:>7.1}  ms ({} replies)\n",
            "bot reply latency", l.p50, l.p99, l.max, l.count
        );
        out += &format!(
            "  {:<28} {} webhook calls, {} redelivered, {} duplicate actions · {} declined cards first · {} unexpected replies · {} waits for the per-number limit\n",
            "WhatsApp checks",
            self.webhook_calls,
            self.redeliveries,
            self.duplicate_actions,
            self.declined_first,
            self.unexpected_replies,
            self.waits_for_the_limit
        );
        if self.failures.is_empty() {
            out += &format!("  {:<28} none\n", "WhatsApp failures");
        } else {
            out += &format!("  {:<28}", "WhatsApp failures");
            for (reason, count) in &self.failures {
                out += &format!(" [{reason}] ×{count}");
            }
            out += "\n";
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_figures_add_up_conversations_and_flag_failures_and_duplicates() {
        let mut stats = ChatStats::default();
        for i in 0..4 {
            stats.conversations += 1;
            stats.add(Talked {
                webhook_calls: 8,
                redeliveries: u64::from(i == 0),
                reply_latency_ms: vec![10.0 * f64::from(i + 1)],
                declined_first: u64::from(i == 1),
                ..Talked::default()
            });
            if i < 3 {
                stats.orders += 1;
                stats.time_to_order_secs.push(f64::from(5 + i));
            }
        }
        stats.failed("no reply to the location within 30 s");
        let figures = stats.figures(4, 10);
        assert_eq!((figures.conversations, figures.orders), (4, 3));
        assert!((figures.conversion - 0.75).abs() < 1e-9);
        assert!((figures.share_of_customers - 0.4).abs() < 1e-9);
        assert_eq!(figures.webhook_calls, 32);
        assert_eq!(figures.redeliveries, 1);
        assert_eq!(figures.declined_first, 1);
        assert_eq!(figures.reply_latency_ms.count, 4);
        assert_eq!(figures.reply_latency_ms.max, 40.0);
        assert_eq!(figures.time_to_order_secs.p50, 6.0);
        assert!(!figures.clean());
        let table = figures.table();
        assert!(table.contains("conversion 75.0 %"), "{table}");
        assert!(
            table.contains("[no reply to the location within 30 s] ×1"),
            "{table}"
        );

        let mut clean = ChatStats {
            conversations: 1,
            orders: 1,
            ..ChatStats::default()
        };
        assert!(clean.figures(1, 1).clean());
        clean.talked.duplicate_actions = 1;
        assert!(!clean.figures(1, 1).clean());
        let json = serde_json::to_value(clean.figures(1, 1)).unwrap();
        assert_eq!(json["duplicate_actions"], 1);
        assert_eq!(json["conversion"], 1.0);
    }
}
