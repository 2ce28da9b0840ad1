"""Generate the synthetic ``data/demo_tickets`` quickstart dataset for fenlei.

Why this exists: the quickstart needs a small, license-free, realistic-looking
text-classification dataset that ships with the repo and trains in seconds.
The tickets are English customer-support messages of an imaginary SaaS /
e-commerce company ("Lumora"). Classes are deliberately imbalanced and related
classes overlap in vocabulary, so a decent model scores well but not 100%.

Everything is driven by ``random.Random(13)``: running the script twice writes
byte-identical files. Regenerate with::

    python scripts/make_demo_tickets.py
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import Counter
from pathlib import Path

from demo_data_io import write_atomic

SEED = 13
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "data" / "demo_tickets"
SPLITS = ("train", "validation", "test")
VAL_FRACTION = 0.15
TEST_FRACTION = 0.15
MIN_EVAL_PER_CLASS = 3
MIN_BODY_WORDS = 10
MAX_BODY_WORDS = 80

# Total tickets per class (before the ~70/15/15 split). Largest train class is
# roughly 9x the smallest one.
CLASS_TOTALS: dict[str, int] = {
    "technical_bug": 250,
    "account_login": 180,
    "billing_refund": 150,
    "shipping_delay": 120,
    "order_cancellation": 100,
    "password_reset": 85,
    "billing_invoice": 70,
    "feature_request": 55,
    "damaged_item": 45,
    "subscription_upgrade": 38,
    "data_privacy": 32,
    "account_deletion": 28,
}

# Related classes whose body templates are sometimes borrowed, which gives the
# dataset realistic label ambiguity (refund vs cancellation, login vs reset...).
RELATED: dict[str, tuple[str, ...]] = {
    "technical_bug": ("feature_request", "account_login"),
    "account_login": ("password_reset", "technical_bug"),
    "billing_refund": ("order_cancellation", "billing_invoice"),
    "shipping_delay": ("order_cancellation", "damaged_item"),
    "order_cancellation": ("billing_refund", "shipping_delay"),
    "password_reset": ("account_login",),
    "billing_invoice": ("billing_refund", "subscription_upgrade"),
    "feature_request": ("technical_bug",),
    "damaged_item": ("billing_refund", "shipping_delay"),
    "subscription_upgrade": ("billing_invoice", "feature_request"),
    "data_privacy": ("account_deletion",),
    "account_deletion": ("data_privacy", "order_cancellation"),
}
BORROW_PROB = 0.10  # body starts with a related class's template
CONFUSE_PROB = 0.07  # body written entirely in a related class's vocabulary
AMBIGUOUS_PROB = 0.22  # body taken from AMBIGUOUS instead of BODIES
GENERIC_SUBJECT_PROB = 0.18

PRIORITY_WEIGHTS: dict[str, tuple[int, int, int]] = {
    # (low, medium, high)
    "technical_bug": (2, 5, 3),
    "account_login": (1, 4, 5),
    "billing_refund": (2, 5, 3),
    "shipping_delay": (3, 5, 2),
    "order_cancellation": (2, 5, 3),
    "password_reset": (2, 5, 3),
    "billing_invoice": (5, 4, 1),
    "feature_request": (7, 3, 0),
    "damaged_item": (1, 5, 4),
    "subscription_upgrade": (5, 4, 1),
    "data_privacy": (1, 4, 5),
    "account_deletion": (3, 5, 2),
}

SLOTS: dict[str, tuple[str, ...]] = {
    "product": (
        "Aero wireless earbuds",
        "Nimbus desk lamp",
        "Vela backpack",
        "Orbit smart speaker",
        "Kestrel running shoes",
        "Pico espresso maker",
        "Halo yoga mat",
        "Drift phone case",
        "Atlas standing desk",
        "Luma ring light",
        "Tundra water bottle",
        "Cobalt mechanical keyboard",
        "Fern linen sheets",
        "Sable leather wallet",
        "Quill notebook set",
    ),
    "plan": ("Starter", "Basic", "Team", "Pro", "Business", "Plus"),
    "plan2": ("Pro", "Business", "Enterprise", "Team", "Premium"),
    "device": (
        "iPhone 14",
        "iPhone 12",
        "Pixel 7",
        "Galaxy S23",
        "iPad Air",
        "MacBook Air",
        "Windows 11 laptop",
        "Chromebook",
        "Android tablet",
        "work PC",
    ),
    "browser": ("Chrome", "Firefox", "Safari", "Edge", "Brave"),
    "name": (
        "Maria",
        "James",
        "Priya",
        "Tom",
        "Aisha",
        "Lukas",
        "Chen",
        "Sofia",
        "Daniel",
        "Fatima",
        "Oliver",
        "Yuki",
        "Carlos",
        "Emma",
        "Noah",
        "Ines",
        "Raj",
        "Hannah",
        "Mateo",
        "Grace",
    ),
    "carrier": ("UPS", "FedEx", "DHL", "USPS", "the courier", "Royal Mail"),
    "city": (
        "Denver",
        "Leeds",
        "Toronto",
        "Austin",
        "Dublin",
        "Melbourne",
        "Portland",
        "Manchester",
        "Chicago",
        "Lyon",
    ),
    "feature": (
        "dark mode",
        "CSV export",
        "bulk editing",
        "a calendar view",
        "two-factor login with a hardware key",
        "Slack integration",
        "custom fields",
        "an offline mode",
        "keyboard shortcuts",
        "recurring tasks",
        "a public API for reports",
        "saved filters",
    ),
    "area": (
        "dashboard",
        "reports page",
        "checkout page",
        "mobile app",
        "settings page",
        "search bar",
        "file upload",
        "export button",
        "notifications panel",
        "order history page",
    ),
    "error": (
        "error 500",
        "a blank white screen",
        '"Something went wrong"',
        "a spinning wheel forever",
        "error code E-204",
        "a timeout",
        '"Unexpected token" in a popup',
        "a 403 Forbidden page",
    ),
    "weekday": (
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ),
    "month": (
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ),
    "relative": (
        "yesterday",
        "this morning",
        "last week",
        "two days ago",
        "since the weekend",
        "a few days ago",
        "last night",
        "earlier today",
    ),
}

OPENERS: tuple[str, ...] = (
    "Hi,",
    "Hello,",
    "Hi there,",
    "Hey,",
    "Good morning,",
    "Dear support team,",
    "Hello Lumora team,",
    "Hi support,",
    "Good afternoon,",
    "Sorry to bother you again,",
    "Hope you're well.",
    "Hi, it's {name} here.",
)
CLOSERS: tuple[str, ...] = (
    "Thanks.",
    "Thank you!",
    "Thanks in advance.",
    "Regards, {name}",
    "Cheers, {name}",
    "Best, {name}",
    "Please help.",
    "Appreciate it.",
    "Thanks for your help.",
    "Looking forward to hearing from you.",
    "Kind regards, {name}",
    "Thx",
    "Please get back to me asap.",
)
FILLERS: tuple[str, ...] = (
    (
        "I've been a customer for {years} years and this is the first time "
        "something like this happened."
    ),
    "My account email is {email}.",
    "I already contacted you via chat but nobody answered.",
    "This is quite frustrating to be honest.",
    "I tried on my {device} as well.",
    "Not sure if this is the right place to ask.",
    "My order number is #{order} in case you need it.",
    "I'm travelling to {city} next week so a quick answer would help.",
    "Let me know if you need screenshots.",
    "My colleague has the same problem.",
    "I checked the help center but couldn't find anything.",
)
URGENT_MARKERS: tuple[str, ...] = (
    "This is urgent.",
    "URGENT please.",
    "I need this sorted today.",
    "This is blocking my whole team.",
)

GENERIC_SUBJECTS: tuple[str, ...] = (
    "Need help",
    "Question",
    "Quick question",
    "Help please",
    "Problem with my account",
    "Support request",
    "Following up",
    "Re: your last email",
    "Issue with order #{order}",
    "Not happy",
    "Hello",
    "Please read",
    "Still waiting for an answer",
    "Complaint",
)

SUBJECTS: dict[str, tuple[str, ...]] = {
    "technical_bug": (
        "App crashes when I open the {area}",
        "Bug in the {area}",
        "{area} not loading",
        "Getting {error} on the {area}",
        "Something is broken after the latest update",
        "Export not working",
        "The {area} keeps freezing",
        "Buttons don't respond on {browser}",
        "Weird glitch on {device}",
        "Sync is broken",
        "Page shows {error}",
    ),
    "account_login": (
        "Can't log in",
        "Unable to sign in to my account",
        "Login not working on {device}",
        "Locked out of my account",
        "Two-factor code never arrives",
        "Keep getting logged out",
        "Sign in loop",
        "Account locked after too many attempts",
        "SSO login failing for my team",
        "Login page says my account doesn't exist",
    ),
    "billing_refund": (
        "Refund request for order #{order}",
        "Requesting my money back",
        "Charged twice, need a refund",
        "Where is my refund?",
        "Refund not received yet",
        "Please refund {amount}",
        "Double charge on my card",
        "Charged after cancelling",
        "Return processed but no refund",
        "Money back for unused subscription",
    ),
    "shipping_delay": (
        "Order #{order} hasn't arrived",
        "Where is my package?",
        "Delivery is late",
        "Tracking hasn't updated in {days} days",
        "Still waiting for my {product}",
        "Shipment stuck in transit",
        "Package not delivered yet",
        "Expected delivery date passed",
        "{carrier} says delayed",
        "When will my order ship?",
    ),
    "order_cancellation": (
        "Cancel order #{order}",
        "Please cancel my order",
        "I want to cancel my purchase",
        "Cancellation request",
        "Ordered by mistake, please cancel",
        "Stop my order before it ships",
        "Can I still cancel?",
        "Cancel the {product} order",
        "Changed my mind about order #{order}",
        "Duplicate order, cancel one please",
    ),
    "password_reset": (
        "Password reset link not working",
        "Forgot my password",
        "Reset email never arrives",
        "Need to reset my password",
        "Password reset link expired",
        "How do I change my password?",
        "New password not accepted",
        "Can't reset password on {device}",
        "Reset password request",
        "Password reset keeps failing",
    ),
    "billing_invoice": (
        "Invoice for {month}",
        "Need a copy of my invoice",
        "VAT number missing on invoice",
        "Wrong company name on invoice",
        "Receipt for order #{order}",
        "Invoice request for accounting",
        "Can you resend invoice INV-{invoice}?",
        "Billing address on invoice is wrong",
        "Where can I download invoices?",
        "Invoice amount doesn't match",
    ),
    "feature_request": (
        "Feature request: {feature}",
        "Suggestion for the {area}",
        "Would love to see {feature}",
        "Idea: {feature}",
        "Please add {feature}",
        "Any plans for {feature}?",
        "Feedback on the {area}",
        "Missing feature",
        "Improvement idea",
        "Request for {feature}",
    ),
    "damaged_item": (
        "{product} arrived broken",
        "Damaged item in my order",
        "Received a damaged {product}",
        "Box was crushed",
        "Item cracked on arrival",
        "Wrong item and it's damaged",
        "Parts missing from order #{order}",
        "My {product} is defective",
        "Order #{order} arrived damaged",
        "Scratched and dented product",
    ),
    "subscription_upgrade": (
        "Upgrade to {plan2}",
        "How do I upgrade my plan?",
        "Switch from {plan} to {plan2}",
        "Add more seats to our plan",
        "Upgrade question",
        "Move to annual billing",
        "Pricing for the {plan2} plan",
        "Want to upgrade my subscription",
        "Upgrade our team account",
        "Change plan",
    ),
    "data_privacy": (
        "GDPR data request",
        "What data do you store about me?",
        "Request for a copy of my personal data",
        "Privacy concern",
        "Stop sharing my data",
        "Data access request",
        "Who has access to my information?",
        "Unsubscribe and remove my data from marketing",
        "Cookie and tracking question",
        "Question about your privacy policy",
    ),
    "account_deletion": (
        "Delete my account",
        "Please close my account",
        "Account deletion request",
        "Remove my account permanently",
        "How do I delete my profile?",
        "Close account for {email}",
        "I want to delete everything",
        "Terminate my account",
        "Deactivate my account",
        "Delete account and data",
    ),
}

BODIES: dict[str, tuple[str, ...]] = {
    "technical_bug": (
        (
            "Whenever I open the {area} on {browser} I get {error}. I cleared the "
            "cache and tried incognito but it still happens."
        ),
        (
            "Since the update {relative} the {area} crashes as soon as I click "
            "anything. Steps: log in, open {area}, click filter. Crash."
        ),
        (
            "The export button does nothing. I click it, a spinner shows for a "
            "second and then nothing is downloaded."
        ),
        "On my {device} the app freezes on the {area} and I have to force close it.",
        (
            "Numbers on the {area} are wrong, it shows 0 orders but I clearly have "
            "{small} orders this month."
        ),
        (
            "I get {error} every time I try to save changes in the {area}. It "
            "worked fine {relative}."
        ),
        "Notifications are duplicated, I get every email three times since {relative}.",
        (
            "The {area} looks broken on {browser}, text overlaps and the save "
            "button is hidden behind the footer."
        ),
        "File upload fails at 99% with {error}. The file is only 2 MB.",
        (
            "Sync between the web app and my {device} stopped working, changes "
            "made on one don't show on the other."
        ),
        (
            "After I log in the {area} is just {error}, so technically I can get "
            "in but I can't do anything."
        ),
        (
            "Search returns no results even for items I can see in the list. Is "
            "the search broken?"
        ),
        (
            "Dates in the {area} show in the wrong timezone, everything is off by "
            "a few hours."
        ),
        (
            "I think CSV export is broken, the file only has headers and no rows. "
            "It used to work, please fix."
        ),
    ),
    "account_login": (
        (
            "I can't sign in to my account. I enter my email and password and it "
            "just says invalid credentials, but I'm sure they are right."
        ),
        (
            "I'm stuck in a loop: I log in, it redirects me to the login page "
            "again. Tried {browser} and my {device}."
        ),
        (
            "My two-factor code never arrives by SMS so I can't get into my "
            "account. I changed phone number {relative}."
        ),
        (
            "My account got locked after a few failed attempts. Can you unlock "
            "it? I need access for work."
        ),
        "The app keeps logging me out every few minutes on my {device}.",
        "Login with Google fails with {error}. My colleagues can log in fine.",
        (
            "Our SSO login stopped working for the whole team {relative}. Nobody "
            "at our company can get in."
        ),
        (
            "It says no account exists with {email} but I have been paying for "
            "{years} years."
        ),
        (
            "I can't log in. I already tried resetting my password twice and it "
            "still won't let me in."
        ),
        (
            "After the update I'm unable to sign in on {device}, the login button "
            "doesn't do anything."
        ),
        (
            "I changed my email address and now I can't log in with either the "
            "old or the new one."
        ),
        (
            "Getting 'session expired' right after entering my password. I can't "
            "access my account at all."
        ),
    ),
    "billing_refund": (
        (
            "I was charged {amount} twice for order #{order}. Please refund the "
            "duplicate charge."
        ),
        (
            "I returned the {product} {relative} and the courier confirmed it "
            "arrived, but I haven't received my refund of {amount}."
        ),
        (
            "I cancelled my subscription but was still charged {amount} on "
            "{month} {day}. I'd like that money back."
        ),
        (
            "You promised a refund two weeks ago and nothing is on my card yet. "
            "Can you check?"
        ),
        (
            "Please refund order #{order}. I cancelled it within the window and "
            "was told I'd get my money back."
        ),
        (
            "The {plan} plan renewed automatically and I didn't want it. Can I "
            "get a refund for {amount}?"
        ),
        (
            "I was charged {amount} for a product I never received. I want a "
            "refund, not a replacement."
        ),
        (
            "My bank shows a charge of {amount} from Lumora that I don't "
            "recognise. If it's a mistake please reverse it."
        ),
        (
            "Got a partial refund only, {amount} is still missing from the "
            "original payment."
        ),
        (
            "The discount code didn't apply at checkout so I paid {amount} too "
            "much. Please refund the difference."
        ),
        (
            "Refund status says processed but my card still hasn't been credited "
            "after {days} days."
        ),
        (
            "I'm not happy with the {product} and sent it back. When will the "
            "{amount} be returned to my account?"
        ),
    ),
    "shipping_delay": (
        (
            "My order #{order} was supposed to arrive on {weekday} but it's still "
            "not here."
        ),
        "Tracking for #{order} hasn't moved in {days} days, it just says in transit.",
        (
            "I ordered the {product} {relative} and it hasn't even shipped yet. "
            "When can I expect it?"
        ),
        (
            "{carrier} says my package is delayed but gives no new date. I need it "
            "before the weekend."
        ),
        "The package shows delivered but nothing arrived at my door in {city}.",
        (
            "It's been {days} days since I placed order #{order} and there is no "
            "tracking number."
        ),
        "My parcel seems stuck at the depot in {city}. Can you chase the courier?",
        "The estimated delivery date keeps getting pushed back. Where is my {product}?",
        (
            "I paid for express shipping and the {product} still hasn't arrived. "
            "That's not what I paid for."
        ),
        (
            "Order #{order} is late. It's a birthday gift, so if it can't arrive "
            "by {weekday} I'd rather cancel."
        ),
        "Tracking link gives {error} and I have no idea where my package is.",
        (
            "Half of my order arrived, the {product} is still missing. Is it "
            "coming separately?"
        ),
    ),
    "order_cancellation": (
        "Please cancel order #{order}, I ordered the wrong size.",
        "I placed an order by mistake {relative}. Can you cancel it before it ships?",
        "I accidentally ordered the {product} twice. Please cancel one of the orders.",
        (
            "I changed my mind, please cancel my order #{order}. I understand the "
            "refund may take a few days."
        ),
        "Is it still possible to cancel order #{order}? It says processing.",
        (
            "I found the {product} cheaper elsewhere, please cancel my order and "
            "refund me."
        ),
        (
            "Cancel my order please, the delivery is taking too long and I don't "
            "need it anymore."
        ),
        "I don't see a cancel button for order #{order}. How do I cancel?",
        (
            "Please stop order #{order}, the shipping address is wrong and I'd "
            "rather reorder."
        ),
        "I need to cancel the {product} from my order but keep the rest.",
        (
            "Wanted to cancel order #{order} within the first hour like your "
            "policy says but the page gives {error}."
        ),
        (
            "My card was charged {amount} for an order I want to cancel. Please "
            "cancel it and return the money."
        ),
    ),
    "password_reset": (
        "I forgot my password and the reset email never arrives. I checked spam too.",
        (
            "The password reset link says it has expired even though I clicked it "
            "right away."
        ),
        "I reset my password but the new one isn't accepted when I log in.",
        "How do I change my password? I can't find the option in settings.",
        "I requested a password reset three times, no email. My address is {email}.",
        "The reset page gives {error} when I submit the new password.",
        "I can't log in because I forgot my password. Please send me a reset link.",
        (
            "Password reset form says my new password is too weak but it has 16 "
            "characters and symbols."
        ),
        "I need to reset the password for my account, I think someone else knows it.",
        "The reset link opens the login page instead of the reset form on my {device}.",
        "I clicked 'forgot password' and it said the email was sent but nothing came.",
    ),
    "billing_invoice": (
        "Could you send me the invoice for {month}? Our accountant needs it.",
        "The invoice for order #{order} is missing our VAT number. Can you reissue it?",
        (
            "Our company name is spelled wrong on invoice INV-{invoice}. Please "
            "correct it."
        ),
        (
            "Where do I download invoices? I can only see the receipts for the "
            "last three months."
        ),
        "I need an invoice with our billing address in {city}, not my home address.",
        (
            "Invoice INV-{invoice} says {amount} but I was charged a different "
            "amount. Which one is right?"
        ),
        "Can you resend all invoices from {month} to {email}? Finance lost them.",
        (
            "We need invoices addressed to our company instead of my personal "
            "name. Is that possible?"
        ),
        "The PDF invoice won't open, it shows {error}.",
        (
            "Please add our PO number to invoice INV-{invoice}, otherwise our "
            "finance team can't pay it."
        ),
        "I need a receipt for the {product} for an expense report.",
    ),
    "feature_request": (
        (
            "It would be great if you could add {feature}. We use the app every "
            "day and this would save us a lot of time."
        ),
        (
            "Are there any plans to support {feature}? That's the only thing "
            "missing for us."
        ),
        (
            "Suggestion: let us customise the {area}. Right now it shows too much "
            "information."
        ),
        (
            "I'd love {feature} in the mobile app. The web version is fine but on "
            "my {device} it's hard to use."
        ),
        (
            "Could you add an option to export reports as PDF? CSV is ok but our "
            "managers prefer PDF."
        ),
        "Not a bug, just an idea: {feature} would make the {area} much more useful.",
        "Please consider adding {feature}. Competitors already have it.",
        (
            "It would help if the {area} remembered my last filters instead of "
            "resetting every time."
        ),
        (
            "We're a team of {small} and would really like {feature}. Happy to "
            "test a beta."
        ),
        "Can you make it possible to schedule exports automatically every week?",
        "Small request: a way to undo deleting items in the {area}.",
        "Would be nice to have {feature}. Otherwise we love the product.",
    ),
    "damaged_item": (
        "The {product} arrived with a cracked cover. The box was clearly dropped.",
        (
            "My order #{order} came today and the {product} is broken. I'd like a "
            "replacement."
        ),
        "The package was crushed and the {product} inside is dented.",
        (
            "The {product} doesn't turn on out of the box. It looks like it was "
            "damaged in transit."
        ),
        "Two parts were missing from the box and one was scratched.",
        "Received the {product} but the glass was shattered. Attaching photos.",
        "The {product} arrived damaged and a week late. Not a great experience.",
        (
            "The seam on the {product} is torn, it must have been like that when "
            "it was packed."
        ),
        "Opened order #{order} and the {product} was leaking everywhere.",
        (
            "Item is defective, it stops working after a few minutes. Can I send "
            "it back for a refund or replacement?"
        ),
        (
            "The {product} came scratched and with a dent on the side. Not what I "
            "expect for {amount}."
        ),
    ),
    "subscription_upgrade": (
        (
            "We'd like to upgrade from {plan} to {plan2}. Will we be charged the "
            "full price or prorated?"
        ),
        "How do I add {small} more seats to our team plan?",
        "I want to switch to annual billing on the {plan2} plan. Is there a discount?",
        "Which plan includes {feature}? If it's {plan2} we'll upgrade.",
        "I tried to upgrade to {plan2} but the button gives {error}.",
        "Our team is growing, can we move to the {plan2} plan mid-cycle?",
        "Please upgrade my account to {plan2} and send me the new invoice.",
        "Is there a trial of {plan2} before we commit to upgrading?",
        "We hit the user limit on {plan}. What are our upgrade options?",
        "Can I upgrade just for one month and then go back to {plan}?",
        "What's the price difference between {plan} and {plan2} for {small} users?",
    ),
    "data_privacy": (
        "Under GDPR I'd like a copy of all personal data you hold about me.",
        "What data do you collect when I use the app, and who do you share it with?",
        (
            "I keep getting marketing emails even though I unsubscribed. Please "
            "stop using my data for marketing."
        ),
        (
            "Do you sell customer data to third parties? I couldn't find a clear "
            "answer in the privacy policy."
        ),
        (
            "I'd like to know which of your employees can see my order history "
            "and address."
        ),
        "Please send me a data export of everything linked to {email}.",
        "Where are your servers located? Our company needs data stored in the EU.",
        (
            "I received an email addressed to someone else with their order "
            "details. This looks like a data leak."
        ),
        "How long do you keep my payment details after I close my account?",
        (
            "I want my personal data erased but I'd like to keep my account for "
            "now. Is that possible?"
        ),
        "Can you confirm you don't track me with third-party cookies?",
    ),
    "account_deletion": (
        "Please delete my account and all associated data. My email is {email}.",
        "I no longer use Lumora. How do I close my account permanently?",
        "I want to delete my profile but I can't find the option in the settings.",
        "Please close my account, I have a new one with a different email.",
        (
            "I'd like my account removed. I don't want to receive anything from "
            "you anymore."
        ),
        "Delete my account please. I cancelled my subscription {relative}.",
        "How can I deactivate my account? I might come back later.",
        "I created two accounts by mistake, please delete the one with {email}.",
        (
            "Please remove my account completely, including order history and "
            "saved addresses."
        ),
        "I tried to delete my account but got {error}.",
        "I'm leaving because of the price increase. Please close my account.",
    ),
}

# Bodies that sit on the border of a related class: a human triager would pick
# the label, but the wording mostly matches the neighbour.
AMBIGUOUS: dict[str, tuple[str, ...]] = {
    "technical_bug": (
        (
            "The export only gives me CSV and the PDF option is greyed out. Is that "
            "a bug or just not supported yet?"
        ),
        (
            "I can't log in on {browser}, the page just reloads. Works on my "
            "{device} though."
        ),
        "The reset password page shows {error} when I open it.",
        "Checkout page gives {error} when I try to upgrade to {plan2}.",
    ),
    "account_login": (
        (
            "I forgot which email I used and now I can't get in. Can you help me "
            "reset access?"
        ),
        (
            "The password reset worked but I still can't log in, it says my "
            "account is locked."
        ),
        "The login page shows {error} on {browser}. Is the site down?",
        "I need access to my account again, I think my password changed.",
    ),
    "billing_refund": (
        "Please cancel order #{order} and refund the {amount} to my card.",
        "I cancelled my subscription {relative}, when will I get the money back?",
        "The invoice says {amount} but I was charged more. I want the difference back.",
        "The {product} arrived broken, I don't want a replacement, just my money back.",
    ),
    "shipping_delay": (
        (
            "My order #{order} is so late that I'm thinking about cancelling it. "
            "Any update?"
        ),
        (
            "The box finally arrived but it's not the {product}, that part of the "
            "order is still missing."
        ),
        "Can you tell me the status of order #{order}? I ordered it {relative}.",
        (
            "My {product} still hasn't arrived. If it doesn't come this week I "
            "want a refund."
        ),
    ),
    "order_cancellation": (
        (
            "I want my money back for order #{order}, it hasn't shipped so "
            "please just cancel it."
        ),
        "The delivery date is {days} days away and I need it sooner. Please cancel.",
        "Please don't send order #{order}, I'll get a refund right?",
        "I'd like to cancel my subscription renewal, not the whole account.",
    ),
    "password_reset": (
        (
            "I can't log in, I think I typed my password wrong too many times. "
            "How do I set a new one?"
        ),
        "Locked out of my account. I need a new password.",
        "I can't sign in on my {device}, can you send me a link to change my password?",
        "Login says invalid password. Can I get a reset?",
    ),
    "billing_invoice": (
        (
            "I was charged {amount} but my invoice shows a different number. "
            "Please send a corrected invoice."
        ),
        "After upgrading to {plan2} I need an invoice showing the new price.",
        (
            "The charge of {amount} on {month} {day}, what was that for? Please "
            "send the invoice."
        ),
        "I need the invoice for the refund of order #{order} for my records.",
    ),
    "feature_request": (
        "The {area} doesn't let me export to PDF, only CSV. Please add it.",
        (
            "When I log in on {device} I have to type my password every time. "
            "Could you add a remember me option?"
        ),
        (
            "It's annoying that the {area} resets my filters every time. Can "
            "you change that?"
        ),
        "Is {feature} available on the {plan2} plan? If not, please add it.",
    ),
    "damaged_item": (
        (
            "My order #{order} arrived {days} days late and the {product} was "
            "broken inside."
        ),
        "The {product} I received is not working. I want a refund.",
        (
            "Package looked fine but the {product} inside was cracked, please "
            "send a new one or refund me."
        ),
        "Half of order #{order} is missing and what arrived is scratched.",
    ),
    "subscription_upgrade": (
        (
            "How much would the {plan2} plan cost per year? Please send me an "
            "invoice so I can get it approved."
        ),
        "We need {feature}, which I think is only on {plan2}. Can we switch?",
        "Can you change our billing from monthly to yearly and send the new invoice?",
        "Our {plan} plan is too small now, what are the options?",
    ),
    "data_privacy": (
        (
            "Please delete all the personal data you have about me. I'll keep my "
            "account for now."
        ),
        "Before I close my account I want to know what happens to my data.",
        "Why do I receive emails from partners of yours? I never agreed to that.",
        "Someone else logged into my account from {city}. Was my data leaked?",
    ),
    "account_deletion": (
        (
            "Please remove all my data from your systems and close my account, as "
            "is my right under GDPR."
        ),
        (
            "Cancel everything please, the subscription and the account. I won't "
            "be using it again."
        ),
        "I want to be forgotten, delete my profile and my order history.",
        "I don't want any more emails, just remove me completely.",
    ),
}

EMAIL_DOMAINS: tuple[str, ...] = (
    "gmail.com",
    "outlook.com",
    "yahoo.com",
    "proton.me",
    "company.io",
    "hey.com",
)
TYPO_PAIRS: tuple[tuple[str, str], ...] = (
    ("receive", "recieve"),
    ("definitely", "definately"),
    ("account", "acount"),
    ("password", "pasword"),
    ("order", "oder"),
    ("please", "pls"),
    ("because", "becuase"),
    ("thanks", "thx"),
    ("you", "u"),
    ("again", "agian"),
    ("address", "adress"),
    ("separately", "seperately"),
)

SLOT_RE = re.compile(r"\{(\w+)\}")


def fill(template: str, rng: random.Random, name: str) -> str:
    """Replace every ``{slot}`` in ``template`` with a random filler."""

    def repl(match: re.Match[str]) -> str:
        key = match.group(1)
        if key == "name":
            return name
        if key == "order":
            return str(rng.randint(10000, 99999))
        if key == "invoice":
            return f"{rng.randint(2022, 2025)}-{rng.randint(100, 9999):04d}"
        if key == "amount":
            cents = rng.choice((0, 0, 99, 50, rng.randint(1, 99)))
            currency = rng.choice(("$", "$", "$", "€", "£"))
            return f"{currency}{rng.randint(5, 480)}.{cents:02d}"
        if key == "days":
            return str(rng.randint(3, 15))
        if key == "day":
            return str(rng.randint(1, 28))
        if key == "small":
            return str(rng.randint(3, 40))
        if key == "years":
            return str(rng.randint(2, 9))
        if key == "email":
            user = name.lower() + rng.choice(("", ".k", "_92", "88", ".work"))
            return f"{user}@{rng.choice(EMAIL_DOMAINS)}"
        return rng.choice(SLOTS[key])

    return SLOT_RE.sub(repl, template)


def add_typos(text: str, rng: random.Random) -> str:
    """Inject one or two realistic typos (misspellings, swapped letters)."""
    for _ in range(rng.randint(1, 2)):
        if rng.random() < 0.5:
            right, wrong = rng.choice(TYPO_PAIRS)
            pattern = re.compile(rf"\b{right}\b")
            if pattern.search(text):
                text = pattern.sub(wrong, text, count=1)
                continue
        words = text.split(" ")
        candidates = [i for i, w in enumerate(words) if w.isalpha() and len(w) > 4]
        if not candidates:
            continue
        i = rng.choice(candidates)
        w = words[i]
        j = rng.randint(1, len(w) - 3)
        words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
        text = " ".join(words)
    return text


def make_ticket(label: str, rng: random.Random) -> dict[str, str]:
    """Compose one ticket (without id) for ``label``."""
    name = rng.choice(SLOTS["name"])

    if rng.random() < GENERIC_SUBJECT_PROB:
        subject = fill(rng.choice(GENERIC_SUBJECTS), rng, name)
    else:
        subject = fill(rng.choice(SUBJECTS[label]), rng, name)

    roll = rng.random()
    core_label = label
    core_pool = BODIES[label]
    if roll < CONFUSE_PROB + BORROW_PROB:
        core_label = rng.choice(RELATED[label])
        core_pool = BODIES[core_label]
    elif roll < CONFUSE_PROB + BORROW_PROB + AMBIGUOUS_PROB:
        core_pool = AMBIGUOUS[label]
    parts: list[str] = []
    if rng.random() < 0.55:
        parts.append(fill(rng.choice(OPENERS), rng, name))
    parts.append(fill(rng.choice(core_pool), rng, name))
    if core_label != label:
        # Tie the borrowed core back to the true label with a second sentence;
        # below CONFUSE_PROB the neighbour's wording stands alone (hard case).
        if roll >= CONFUSE_PROB:
            parts.append(fill(rng.choice(BODIES[label]), rng, name))
    elif rng.random() < 0.3:
        # Two complaints in one message is common in real support queues.
        parts.append(fill(rng.choice(BODIES[label]), rng, name))
    if rng.random() < 0.35:
        parts.append(fill(rng.choice(FILLERS), rng, name))
    urgent = rng.random() < 0.12
    if urgent:
        parts.append(rng.choice(URGENT_MARKERS))
    if rng.random() < 0.6:
        parts.append(fill(rng.choice(CLOSERS), rng, name))
    body = " ".join(parts)

    if rng.random() < 0.15:
        body = add_typos(body, rng)
    if rng.random() < 0.06:
        body = body.lower()
        subject = subject.lower()

    low, med, high = PRIORITY_WEIGHTS[label]
    priority = rng.choices(("low", "medium", "high"), weights=(low, med, high))[0]
    if urgent:
        priority = "high"

    return {
        "subject": subject,
        "body": body,
        "text": f"{subject}. {body}",
        "label": label,
        "priority": priority,
    }


def generate(seed: int = SEED) -> dict[str, list[dict[str, str]]]:
    """Generate all tickets and split them stratified into train/val/test."""
    rng = random.Random(seed)
    seen: set[str] = set()
    by_label: dict[str, list[dict[str, str]]] = {}
    for label, total in CLASS_TOTALS.items():
        rows: list[dict[str, str]] = []
        while len(rows) < total:
            ticket = make_ticket(label, rng)
            n_words = len(ticket["body"].split())
            key = ticket["text"].lower()
            if not MIN_BODY_WORDS <= n_words <= MAX_BODY_WORDS or key in seen:
                continue
            seen.add(key)
            rows.append(ticket)
        by_label[label] = rows

    # Global shuffle, then ids, so ids carry no information about the label.
    everything = [row for rows in by_label.values() for row in rows]
    rng.shuffle(everything)
    for i, row in enumerate(everything, start=1):
        row["id"] = f"T{i:05d}"

    splits: dict[str, list[dict[str, str]]] = {name: [] for name in SPLITS}
    for label, rows in by_label.items():
        n = len(rows)
        n_val = max(MIN_EVAL_PER_CLASS, round(n * VAL_FRACTION))
        n_test = max(MIN_EVAL_PER_CLASS, round(n * TEST_FRACTION))
        shuffled = sorted(rows, key=lambda r: r["id"])
        rng.shuffle(shuffled)
        splits["validation"].extend(shuffled[:n_val])
        splits["test"].extend(shuffled[n_val : n_val + n_test])
        splits["train"].extend(shuffled[n_val + n_test :])
        assert n - n_val - n_test > 0, label

    keys = ("id", "subject", "body", "text", "label", "priority")
    return {
        name: [{k: row[k] for k in keys} for row in sorted(rows, key=lambda r: r["id"])]
        for name, rows in splits.items()
    }


def render_readme(splits: dict[str, list[dict[str, str]]]) -> str:
    """Build the dataset card with per-split class counts."""
    counts = {name: Counter(r["label"] for r in rows) for name, rows in splits.items()}
    labels = sorted(CLASS_TOTALS, key=lambda lab: (-CLASS_TOTALS[lab], lab))
    header = "| label | " + " | ".join(SPLITS) + " | total |"
    sep = "|---|" + "---:|" * (len(SPLITS) + 1)
    table = [header, sep]
    for lab in labels:
        cells = [counts[s][lab] for s in SPLITS]
        table.append(
            f"| `{lab}` | " + " | ".join(map(str, cells)) + f" | {sum(cells)} |"
        )
    totals = [len(splits[s]) for s in SPLITS]
    table.append(
        "| **total** | " + " | ".join(map(str, totals)) + f" | {sum(totals)} |"
    )
    prio = Counter(r["priority"] for rows in splits.values() for r in rows)
    return "\n".join(
        [
            "# demo_tickets",
            "",
            "Small **synthetic** dataset of English customer-support tickets for an",
            'imaginary SaaS / e-commerce company ("Lumora"). It was written for',
            "fenlei's quickstart by `scripts/make_demo_tickets.py`; no real customer",
            "data is included. Names, order numbers, e-mail addresses and amounts",
            "are random fillers.",
            "",
            "The tickets are composed from many subject/body templates per class",
            "with slot fillers, greetings, sign-offs, filler sentences and",
            "occasional typos. Classes are deliberately **imbalanced** (largest",
            "train class is ~9x the smallest) and related classes overlap",
            "(refund vs. cancellation, login vs. password reset, bug vs. feature",
            "request, deletion vs. privacy), so a good model should score well",
            "but not perfectly.",
            "",
            "## Files",
            "",
            "- `train.jsonl`, `validation.jsonl`, `test.jsonl`: one JSON object per",
            "  line (UTF-8), stratified ~70/15/15 split, every class in every split.",
            "",
            "## Fields",
            "",
            "| field | type | description |",
            "|---|---|---|",
            "| `id` | str | unique ticket id, `T00001` ... (unique across splits) |",
            "| `subject` | str | ticket subject line |",
            "| `body` | str | ticket message (10-80 words) |",
            '| `text` | str | `subject + ". " + body`; the default input field |',
            "| `label` | str | one of the 12 classes below (target) |",
            "| `priority` | str | `low`, `medium` or `high` (auxiliary, noisy) |",
            "",
            "## Class counts",
            "",
            *table,
            "",
            (
                f"Priority overall: low {prio['low']}, medium {prio['medium']}, "
                f"high {prio['high']}."
            ),
            "",
            "## Regenerate",
            "",
            "```bash",
            "python scripts/make_demo_tickets.py",
            "```",
            "",
            f"The generator is seeded (`random.Random({SEED})`) and stdlib-only;",
            "running it again produces byte-identical files.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="output directory"
    )
    args = parser.parse_args()
    out_dir: Path = args.out_dir

    splits = generate(SEED)
    for name, rows in splits.items():
        content = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        write_atomic(out_dir / f"{name}.jsonl", content)
    write_atomic(out_dir / "README.md", render_readme(splits))

    for name, rows in splits.items():
        counts = Counter(r["label"] for r in rows)
        summary = ", ".join(f"{k}={counts[k]}" for k in sorted(counts))
        print(f"{name}: {len(rows)} rows ({summary})")
    print(f"wrote {out_dir}")


if __name__ == "__main__":
    main()
