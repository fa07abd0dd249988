"""A small labelled corpus of label text: short categorical values as real exports hold them.

Hand-written for this project (not Faker, not the demo generator): offence descriptions in the style of public
court and booking data (abbreviated statute titles, "W/", "Or Less", degrees), product names and ticket or incident
categories. A few labels name a person or hold an identifier; `PERSONAL` lists those values (the ground truth), and
`KNOWN` the ones the organisation knows (as its known-identifier index would). Every other label holds no personal
value: changing it is over-masking.
"""

from __future__ import annotations

OFFENCES = """
Felony Battery (Dom Strang)
Possess Cannabis/20 Grams Or Less
Disorderly Conduct
Deliver 3,4 Methylenediox
Battery
Felony Battery W/Prior Convict
Aggravated Battery / Pregnant
Aggrav Battery w/Deadly Weapon
Aggravated Assault W/Dead Weap
Aggravated Assault w/Firearm
Petit Theft
Petit Theft $100- $300
Grand Theft in the 3rd Degree
Grand Theft (Motor Vehicle)
Grand Theft Firearm
Burglary Unoccupied Dwelling
Burglary Conveyance Unoccup
Burglary Structure Unoccup
Burglary Dwelling Occupied
Robbery / No Weapon
Robbery W/Firearm
Driving Under The Influence
DUI Property Damage/Injury
DUI Level 0.15 Or Minor In Veh
Driving While License Revoked
Driving License Suspended
Operating W/O Valid License
Leave Acc/Attend Veh/More $50
Leaving the Scene of Accident
Resist/Obstruct W/O Violence
Resist Officer w/Violence
Battery on Law Enforc Officer
Trespass Structure/Conveyance
Trespass Other Struct/Conve
Trespassing/Construction Site
Possession of Cocaine
Possession Of Heroin
Possession of Oxycodone
Possession Of Alprazolam
Possession Of Methamphetamine
Poss Pyrrolidinovalerophenone
Possess Drug Paraphernalia
Poss Cocaine/Intent To Del/Sel
Sell Cannabis
Deliver Cocaine
Purchase Cannabis
Tampering With Physical Evidence
Criminal Mischief
Criminal Mischief Damage <$200
Criminal Mischief>$200<$1000
Fleeing or Eluding a LEO
Fail To Appear For Felony Offense
Fail Register Vehicle
Uttering a Forged Instrument
Uttering Forged Bills
Forgery
Fraudulent Use of Credit Card
Unlaw Use False Name/Identity
Giving False Crime Report
False Imprisonment
Child Abuse
Neglect Child / No Bodily Harm
Cruelty Toward Child
Stalking
Aggravated Stalking
Violation of Injunction Order/Stalking/Cyberstalking
Viol Pretrial Release Dom Viol
Viol Injunct Domestic Violence
Carrying Concealed Firearm
Carrying A Concealed Weapon
Felon in Pos of Firearm or Amm
Exposes Culpable Negligence
Lewd or Lascivious Molestation
Prostitution/Lewd Act Assignation
Open Carrying Of Weapon
Unlicensed Telemarketing
Obstruct Fire Equipment
Throw Deadly Missile Into Veh
Discharge Firearm From Vehicle
Shoot Into Vehicle
Armed Trespass
Tresspass in Structure or Conveyance
Battery Spouse Or Girlfriend
Simple Battery
Assault
Extradition/Defendants
Contempt of Court
Corrupt Public Servant
Bribery Athletic Contests
Money Launder/Hide Imprpr Acqd
Arson II (Vehicle)
Computer Pornography
Sex Offender Fail Comply W/Law
Failure To Return Hired Vehicle
Use Of 2 Way Device To Fac Fel
Interfere W/Traf Cont Dev RR
Lve/Scen/Acc/Veh/Prop/Damage
Solicit To Deliver Cocaine
Traffick Oxycodone 4g><14g
Possession Burglary Tools
Dealing in Stolen Property
Retail Theft $300 1st Offense
Theft/To Deprive
Unauthorized Interf w/Railroad
Manslaughter W/Weapon/Firearm
Murder in the First Degree
Attempted Robbery No Weapon
Kidnapping / Facilitate Felony
Carjacking with a Firearm
Poss of Firearm by Convic Felo
Reckless Driving
Racing On Highways
Hit and Run
Possession of Hydromorphone
Possess Tobacco Product Under 18
Offer Agree Secure For Lewd Act
Opert With Susp DL 2nd Offens
Compulsory Sch Attnd Violation
Possession Of Clonazepam
Possess Countrfeit Credit Card
""".strip().splitlines()

PRODUCTS = """
Cloud Backup Pro
TeamChat
CorpSync Desktop
Ledger Lite
Ledger Enterprise
PayFlow Gateway
Atlas Maps Premium
Harbor VPN
Beacon Analytics
Summit CRM
Summit CRM Mobile
Orchid Mail
Pioneer Notebook 14
Pioneer Notebook 16 Pro
Granite Server X2
Willow Tablet Mini
Meadow Smart Thermostat
Falcon Router AX3000
Juniper Docs
Sequoia Data Lake
Morgan Stapler Deluxe
Hudson Office Chair
Lincoln Standing Desk
Ashford Monitor Arm
Kingston USB Hub
Ellis Label Printer
Carter Paper Shredder
Franklin Planner 2025
Baxter Coffee Maker
Jasper Wireless Mouse
""".strip().splitlines()

CATEGORIES = """
Phishing
Malware
Lost Device
Stolen Laptop
Unauthorized Access
Policy Violation
Password Reset
Account Lockout
Data Loss
Denial of Service
Suspicious Login
Misdirected Email
Physical Security
Vendor Breach
Billing Question
Refund Request
Shipping Delay
Damaged Item
Wrong Item Sent
Cancel Subscription
Feature Request
Bug Report
Login Problem
Travel
Meals & Entertainment
Office Supplies
Training & Conferences
Client Gifts
Mileage
Relocation
""".strip().splitlines()

# Labels that name a person or hold an identifier: (column, label, its personal values).
PERSONAL: list[tuple[str, str, list[str]]] = [
    ("offence", "Battery on Quentin Zabrowski", ["Quentin Zabrowski"]),
    ("offence", "Violation of Injunction (Jane Doe)", ["Jane Doe"]),
    ("offence", "Stalking (contact rmalloy@mailbox.example.org)", ["rmalloy@mailbox.example.org"]),
    ("offence", "Harassing Phone Calls to 305-555-0187", ["305-555-0187"]),
    ("offence", "Tampering With Witness Darnell Okonkwo", ["Darnell Okonkwo"]),
    ("offence", "Contempt of Court (Marcus Black)", ["Marcus Black"]),
    ("product", "Replacement unit for Priya Raghunathan", ["Priya Raghunathan"]),
    (
        "product",
        "Cloud Backup Pro (licence of tomasz.wieczorek@example-corp.com)",
        ["tomasz.wieczorek@example-corp.com"],
    ),
    ("category", "Callback 415-555-0142", ["415-555-0142"]),
    ("category", "Escalation to Ingrid Solberg", ["Ingrid Solberg"]),
]

# What the organisation knows (its known-identifier index): not every name above, so the NER rule is exercised too.
KNOWN = {"PERSON": ["Jane Doe", "Marcus Black", "Ingrid Solberg"], "EMAIL_ADDRESS": ["rmalloy@mailbox.example.org"]}


def clean_labels() -> dict[str, list[str]]:
    """The labels that hold no personal value, by column."""
    return {"offence": OFFENCES, "product": PRODUCTS, "category": CATEGORIES}


def records(column: str) -> tuple[list[str], list[list[str]]]:
    """The column as records: a label repeated as often as a real export might hold it (every fourth clean label
    once, the rest 5 to 14 times; a label naming a person once), and each record's personal values."""
    labels: list[str] = []
    truth: list[list[str]] = []
    for i, label in enumerate(clean_labels()[column]):
        n = 1 if i % 4 == 0 else 5 + (i * 7) % 10
        labels += [label] * n
        truth += [[] for _ in range(n)]
    for col, label, values in PERSONAL:
        if col == column:
            labels.append(label)
            truth.append(values)
    return labels, truth
