"""Writes train.jsonl (84) and eval.jsonl (42) beside this file: a 7-label bank ticket-routing domain.

Run:  python bench/newcomer/make_bank_data.py

Written by hand for issue #26 (a newcomer's own domain, not the demo's): 18 ordinary-English customer messages
per label, 6 of each held out for eval (a seeded shuffle), answers "Route: <label>" then one "Reply:" sentence
per label. License: the repository's. bench/newcomer_domain.py bakes a project for it and runs it.
"""

import json
import random
from pathlib import Path

R = {
    "card_lost": (
        "Route: card_lost",
        [
            "I think I left my debit card at the restaurant last night and now I can't find it anywhere.",
            "My wallet was stolen on the train this morning with my credit card inside.",
            "Lost my card somewhere at the airport, can you block it please?",
            "I dropped my card while jogging and it's gone. What should I do?",
            "Someone snatched my bag at the market and my bank card was in it.",
            "I can't remember where I put my card after shopping yesterday.",
            "My son took my card to school and lost it on the bus.",
            "The card fell out of my pocket at the concert, I need a replacement.",
            "I misplaced my credit card during my holiday in Spain.",
            "My purse went missing at the gym, my visa card was in there.",
            "I left my card in the ATM and walked off, when I came back it was gone.",
            "I have no idea where my debit card is, I've searched the whole house.",
            "My card was in my jacket which I forgot in a taxi.",
            "Please freeze my card, I lost it at the football match.",
            "I think my card slipped out at the petrol station.",
            "My phone case with my card in it got lost on the beach.",
            "Lost both my cards when my backpack was stolen at the hostel.",
            "The card I use for groceries has disappeared, I need it cancelled.",
        ],
        "Reply: I have blocked the card and a replacement will arrive within five working days.",
    ),
    "card_declined": (
        "Route: card_declined",
        [
            "My card was declined at the supermarket even though I have money in the account.",
            "Why does my card keep getting rejected when I pay online?",
            "The payment terminal said declined twice at the pharmacy today.",
            "I tried to buy a train ticket and the card was refused.",
            "My card doesn't work abroad, every shop declines it.",
            "Contactless payment failed three times at the coffee shop this morning.",
            "The hotel says my card was declined at check-in, please help.",
            "I got an error saying transaction not approved when paying my phone bill.",
            "My new card gets rejected by every website I try.",
            "At the cinema the card machine said insufficient funds but my balance is fine.",
            "The card was refused when I tried to rent a car.",
            "Online checkout keeps failing with my debit card since yesterday.",
            "My card was declined at the restaurant and it was really embarrassing.",
            "Every time I use my card at the vending machine it gets rejected.",
            "The petrol pump declined my card but it worked last week.",
            "My subscription payment bounced because the card was declined.",
            "Paying for groceries online, the bank keeps rejecting my card.",
            "The shop assistant said my card was blocked when I tried to pay.",
        ],
        "Reply: I have checked the card and removed the block, so please try the payment again.",
    ),
    "transfer_failed": (
        "Route: transfer_failed",
        [
            "I sent money to my landlord yesterday but it never arrived.",
            "My bank transfer to my sister failed and the money is still gone from my account.",
            "The transfer I made on Monday shows as pending for four days now.",
            "I tried to pay an invoice by transfer and got an error message.",
            "Money I sent to a friend abroad bounced back with a fee taken.",
            "My salary transfer to my savings account didn't go through.",
            "The recipient says they never got the payment I sent last week.",
            "I made a transfer with the wrong reference and it was returned.",
            "My international transfer is stuck and nobody can tell me why.",
            "The app says transfer failed but the amount was deducted.",
            "I paid my electricity bill by transfer and the company didn't receive it.",
            "Why was my standing order to my mum cancelled this month?",
            "A transfer to my business partner was rejected by the other bank.",
            "I scheduled a payment for Friday and it never left my account.",
            "My rent payment came back to my account two days later.",
            "The transfer to my new account number failed without explanation.",
            "I sent money to the wrong IBAN by mistake, can it be recalled?",
            "My payment to the tax office is still showing as processing.",
        ],
        "Reply: I have traced the transfer and will update you within two working days.",
    ),
    "fraud_report": (
        "Route: fraud_report",
        [
            "There are three payments on my statement that I never made.",
            "Someone used my card to buy electronics in another country.",
            "I got a text asking for my PIN and I think I replied to it.",
            "My account shows a withdrawal from an ATM in a city I've never visited.",
            "A caller pretending to be the bank got my security code.",
            "I see a subscription charge I never signed up for, every month.",
            "Strange online purchases appeared on my account overnight.",
            "I clicked a link in an email and now money is missing.",
            "Someone opened a loan in my name, I just got a letter about it.",
            "My card details were used at a website I don't recognise.",
            "There is a transfer to an unknown person that I did not authorise.",
            "I think my online banking password was stolen, there are odd logins.",
            "A man called me saying my account was hacked and asked me to move money.",
            "I was charged twice by a shop I have never been to.",
            "Payments in a foreign currency keep appearing on my card.",
            "My elderly father was tricked into giving his card number over the phone.",
            "I noticed small test charges of one euro from a strange company.",
            "Someone changed the phone number on my account without my permission.",
        ],
        "Reply: I have frozen the card and opened a fraud case, and a specialist will call you today.",
    ),
    "account_access": (
        "Route: account_access",
        [
            "I can't log in to online banking, it says my password is wrong.",
            "The app locked me out after I entered the code incorrectly.",
            "I changed phones and now I can't get the verification text.",
            "My online banking account is blocked and I don't know why.",
            "I forgot my username for the banking website.",
            "The one time code never arrives on my phone when I try to sign in.",
            "My fingerprint login stopped working after the update.",
            "I reset my password but the new one doesn't work either.",
            "The website says my account is suspended when I try to log in.",
            "I can't access my account since I moved abroad.",
            "The security questions don't accept my answers anymore.",
            "After three wrong attempts my access was revoked, how do I restore it?",
            "My card reader for online banking is broken and I can't sign in.",
            "The app keeps crashing on the login screen.",
            "I got a new SIM card and the bank app doesn't recognise my device.",
            "My business account login shows an error about expired credentials.",
            "I never received the activation letter for internet banking.",
            "Face recognition on the banking app won't accept me.",
        ],
        "Reply: I have reset your access and sent a new activation code to your registered phone.",
    ),
    "loan_inquiry": (
        "Route: loan_inquiry",
        [
            "What interest rate would I get on a personal loan of ten thousand euros?",
            "I'd like to know if I can borrow money for a new car.",
            "How long does it take to get a mortgage approved?",
            "Can I increase the amount of my existing loan?",
            "What documents do I need to apply for a home loan?",
            "I want to repay my loan early, are there any penalties?",
            "Is it possible to get a student loan from your bank?",
            "How much could I borrow with my current salary?",
            "I'd like to consolidate my credit card debts into one loan.",
            "Can I pause my loan repayments for a few months after losing my job?",
            "What are the conditions for a small business loan?",
            "I applied for a loan last week and haven't heard back.",
            "Could you explain the difference between fixed and variable mortgage rates?",
            "I want to renovate my kitchen, do you offer home improvement loans?",
            "How do I check the remaining balance on my car loan?",
            "Can my partner and I apply for a joint mortgage?",
            "Is there a fee for changing the monthly date of my loan payment?",
            "What happens if I miss a loan instalment?",
        ],
        "Reply: I have passed your question to a lending adviser, who will contact you with an offer.",
    ),
    "fee_dispute": (
        "Route: fee_dispute",
        [
            "Why was I charged a fee for withdrawing cash at my own bank?",
            "There's a monthly account charge I was told would be free.",
            "I was charged an overdraft fee even though I was never overdrawn.",
            "The bank took a fee for a foreign payment that should have been free.",
            "I want a refund of the late payment fee, I paid on time.",
            "My statement shows a card replacement fee I didn't ask for.",
            "You charged me twice for the same account maintenance fee.",
            "Why do I pay a fee for receiving money from abroad?",
            "I was charged for paper statements but I chose online only.",
            "The currency conversion fee on my card seems far too high.",
            "I closed my account but you still took an annual fee.",
            "There's a fee called service charge that nobody explained to me.",
            "I got charged for an unpaid direct debit that was actually paid.",
            "My premium account fee went up without any notice.",
            "The bank charged me for a transfer that failed.",
            "I want to dispute the fee for my returned cheque.",
            "You applied an inactivity fee to my savings account.",
            "I was billed a fee for a text alert service I never activated.",
        ],
        "Reply: I have reviewed the charge and refunded it to your account.",
    ),
}
rng = random.Random(7)
train, evals = [], []
for route, texts, reply in R.values():
    idx = list(range(len(texts)))
    rng.shuffle(idx)
    for k, i in enumerate(idx):
        rec = {"input": texts[i], "output": f"{route}\n{reply}"}
        (evals if k < 6 else train).append(rec)
rng.shuffle(train)
rng.shuffle(evals)
for name, rows in (("train", train), ("eval", evals)):
    with open(Path(__file__).with_name(f"{name}.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
print(len(train), len(evals))
