-- Ticket volume and satisfaction per product and month (Support only).

with tickets as (
    select * from {{ ref('stg_support__tickets') }}
),

aggregated as (
    select
        product,
        opened_month,
        count(*) as tickets,
        count(distinct customer_key) as customers,
        round(avg(satisfaction), 2)::decimal(4, 2) as avg_satisfaction,
        count(satisfaction) as rated_tickets
    from tickets
    group by product, opened_month
)

select * from aggregated
where customers >= {{ approved_min_group_size() }}
