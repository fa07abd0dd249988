with source as (
    select * from {{ source('deidentified', 'finance_expense_claims') }}
),

renamed as (
    select
        claim_id,
        employee_id as employee_key,
        amount,
        currency,
        merchant,
        claim_date as claim_month,
        memo as memo_masked
    from source
)

select * from renamed
